#!/usr/bin/env bash
# Reproduction of the Adan paper's Transformer-XL experiment (WikiText-103, Adam vs Adan), a
# scaled comparison on Penn Treebank, or a quick version with --quick. All flags go to
# `python -m adan_txl.grid`; see --help.
#   bash apps/transformer_xl/run.sh --quick --data ../shared/data/ptb --out results/txl_quick
#   bash apps/transformer_xl/run.sh --preset ptb-scaled --data ../shared/data/ptb --jobs 2
#   bash apps/transformer_xl/run.sh --data data/wikitext-103 --nproc-per-node 8   # the paper's 4 runs
set -euo pipefail
PY="${PYTHON:-python}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if ! "$PY" -c "import adan_txl, adan_core, adan_repro" 2>/dev/null; then
    echo "error: adan_txl/adan_core/adan_repro are not importable by $PY; install them first:" >&2
    echo "  $PY -m pip install -e packages/adan-core -e packages/adan-repro -e apps/transformer_xl" >&2
    exit 2
fi
exec "$PY" -m adan_txl.grid "$@"
