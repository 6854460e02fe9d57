#!/usr/bin/env bash
# Tiny MLM pretraining on both backends, same corpus (GLUE training sentences), same GPT-2 BPE,
# same recipes at scale "quick" lengthened to 600 updates (tiny model, 16 x 64 tokens, warm-up 6). Resumable:
# rerun to continue. Frozen code copy in ./code (PYTHONPATH first). Two envs: the fairseq one
# (ve-fairseq wheel) and a transformers one (ve-fairseq's torchaudio breaks transformers' Trainer).
# As run: from a copy of this folder outside the repo (/work/evidence/backends), which holds
# the runs, the corpus and the frozen code; copy it out before rerunning, as it writes beside itself.
set -u
cd "$(dirname "$0")"
E=$PWD
FS_PY=/tmp/fs/wheelenv/bin/python
HF_PY=/tmp/hfenv/bin/python
export PYTHONPATH=$E/code
BPE=/work/shared/data/gpt2_bpe
C=$E/glue_train_corpus.txt
common=(--scale quick --max-steps 600 --warmup 6 --eval-every 50 --save-every 100 --corpus "$C" --bpe-dir "$BPE" --cache-dir "$E/cache" --threads 1 --log-interval 100)
(
  for recipe in adan adam; do
    $FS_PY -m adan_bert.fairseq_train pretrain --recipe $recipe "${common[@]}" \
        --out "$E/runs/fairseq/$recipe/seed1" >> "$E/logs/fs-$recipe.log" 2>&1
  done
) &
(
  while ! grep -q done /tmp/hfenv.log 2>/dev/null; do sleep 10; done
  for recipe in adan adam; do
    $HF_PY -m adan_bert.pretrain --recipe $recipe --tokenizer gpt2 --decay-all "${common[@]}" \
        --out "$E/runs/transformers/$recipe/seed1" >> "$E/logs/hf-$recipe.log" 2>&1
  done
) &
wait
echo ALL DONE
