#!/usr/bin/env bash
# Full reproduction of the Adan paper's PPO experiment (Adam vs Adan on MuJoCo), or a quick
# version of it with --quick. All flags go to `python -m adan_ppo.grid`; see --help.
#   bash apps/ppo/run.sh --quick --out results/quick
#   bash apps/ppo/run.sh --jobs 16 --out results/ppo            # 4 tasks x 2 opts x 10 seeds x 3M
#   bash apps/ppo/run.sh --envs HalfCheetah-v5 --seeds 1-3 --steps 300000 --jobs 2
set -euo pipefail
PY="${PYTHON:-python}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if ! "$PY" -c "import adan_ppo, adan_core, adan_repro" 2>/dev/null; then
    echo "error: adan_ppo/adan_core/adan_repro are not importable by $PY; install them first:" >&2
    echo "  $PY -m pip install -e packages/adan-core -e packages/adan-repro -e apps/ppo" >&2
    exit 2
fi
# MuJoCo rendering (evaluate --render) works headless with EGL; training does not render.
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec "$PY" -m adan_ppo.grid "$@"
