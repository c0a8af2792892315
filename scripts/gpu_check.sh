#!/usr/bin/env bash
# The GPU verdict (scripts/gpu_check.py): every path a CPU cannot run, asserted on a CUDA machine, in a fresh folder;
# exits non-zero on any failed check. Run from the repo root after `make setup` with a CUDA torch:
#   bash scripts/gpu_check.sh [--dry-run] [--only NAME ...] [--out DIR]
# --dry-run runs every step a CPU can run, on the tiny model (the suite runs it: tests/test_gpu_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 WANDB_SILENT=true
exec "$PY" scripts/gpu_check.py "$@"
