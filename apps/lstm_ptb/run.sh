#!/usr/bin/env bash
# Reproduction of the Adan paper's LSTM experiment (AWD-LSTM on Penn Treebank, Adam vs Adan, 1-3
# layers, AdaBelief's setting), or a quick version with --quick. All flags go to
# `python -m adan_lstm.grid`; see --help.
#   bash apps/lstm_ptb/run.sh --quick --data ../shared/data/ptb --out results/lstm_quick
#   bash apps/lstm_ptb/run.sh --data DIR --jobs 6 --out results/lstm   # 3 depths x 2 opts x 3 seeds
#   bash apps/lstm_ptb/run.sh --preset scaled --layers 1 --seeds 1 2 --jobs 2
set -euo pipefail
PY="${PYTHON:-python}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if ! "$PY" -c "import adan_lstm, adan_core, adan_repro" 2>/dev/null; then
    echo "error: adan_lstm/adan_core/adan_repro are not importable by $PY; install them first:" >&2
    echo "  $PY -m pip install -e packages/adan-core -e packages/adan-repro -e apps/lstm_ptb" >&2
    exit 2
fi
exec "$PY" -m adan_lstm.grid "$@"
