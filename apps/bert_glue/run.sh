#!/usr/bin/env bash
# Reproduction of the Adan paper's BERT experiment on Hugging Face transformers: MLM pretraining
# with the Adam and the Adan recipe, then GLUE fine-tuning of every checkpoint with each recipe,
# both evaluation protocols; or a quick version with --quick. All flags go to
# `python -m adan_bert.grid`; see --help.
#   bash apps/bert_glue/run.sh --quick --glue-dir ../shared/data/glue --out results/bert_quick
#   bash apps/bert_glue/run.sh --scale reduced --glue-dir DIR --jobs 2 --out results/bert_reduced
#   bash apps/bert_glue/run.sh --corpus corpus.txt --glue-dir DIR --nproc-per-node 8   # the paper
#   bash apps/bert_glue/run.sh --backend fairseq --quick --glue-dir DIR --bpe-dir BPE  # on fairseq
set -euo pipefail
PY="${PYTHON:-python}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if ! "$PY" -c "import adan_bert, adan_core, adan_repro, transformers" 2>/dev/null; then
    echo "error: adan_bert/adan_core/adan_repro/transformers are not importable by $PY; install:" >&2
    echo "  $PY -m pip install -e packages/adan-core -e packages/adan-repro -e apps/bert_glue" >&2
    exit 2
fi
if [[ " $* " == *" --backend fairseq "* ]] && ! "$PY" -c "import fairseq" 2>/dev/null; then
    echo "error: --backend fairseq needs fairseq, which $PY cannot import; install a build for" >&2
    echo "  this Python (apps/bert_glue/README.md, 'The fairseq backend'), e.g." >&2
    echo "  $PY -m pip install torch==2.13.0 ve-fairseq==0.12.3" >&2
    exit 2
fi
exec "$PY" -m adan_bert.grid "$@"
