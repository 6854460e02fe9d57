#!/usr/bin/env bash
# fairseq seed 2 of both recipes (run_all.sh's arguments), for the seed-to-seed spread.
# As run: from a copy of this folder outside the repo (/work/evidence/backends), which holds
# the runs, the corpus and the frozen code; copy it out before rerunning, as it writes beside itself.
set -u
cd "$(dirname "$0")"
E=$PWD
export PYTHONPATH=$E/code
common=(--scale quick --max-steps 600 --warmup 6 --eval-every 50 --save-every 100 --corpus "$E/glue_train_corpus.txt" --bpe-dir /work/shared/data/gpt2_bpe --cache-dir "$E/cache" --threads 1 --log-interval 100)
for recipe in adan adam; do
  /tmp/fs/wheelenv/bin/python -m adan_bert.fairseq_train pretrain --recipe $recipe --seed 2 "${common[@]}" \
      --out "$E/runs/fairseq/$recipe/seed2" >> "$E/logs/fs-$recipe-seed2.log" 2>&1
done
