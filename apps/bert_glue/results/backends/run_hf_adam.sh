#!/usr/bin/env bash
# The transformers Adam run of run_all.sh, started beside the Adan one once the fairseq runs
# were done (same arguments).
# As run: from a copy of this folder outside the repo (/work/evidence/backends), which holds
# the runs, the corpus and the frozen code; copy it out before rerunning, as it writes beside itself.
set -u
cd "$(dirname "$0")"
E=$PWD
export PYTHONPATH=$E/code
common=(--scale quick --max-steps 600 --warmup 6 --eval-every 50 --save-every 100 --corpus "$E/glue_train_corpus.txt" --bpe-dir /work/shared/data/gpt2_bpe --cache-dir "$E/cache" --threads 1 --log-interval 100)
/tmp/hfenv/bin/python -m adan_bert.pretrain --recipe adam --tokenizer gpt2 --decay-all "${common[@]}" \
    --out "$E/runs/transformers/adam/seed1" >> "$E/logs/hf-adam.log" 2>&1
