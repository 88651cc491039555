#!/usr/bin/env bash
# Create .venv and install the project. Installs torch first: on a machine without torch, the CPU wheel
# torch==2.13.0 (pip finds it locally where it is cached); bring your own CUDA build by installing torch
# into .venv before running this script (or set TORCH_SPEC, e.g. TORCH_SPEC="torch==2.5.1").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -d .venv ] || "$PYTHON" -m venv .venv
source .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! python -c "import torch" >/dev/null 2>&1; then
  python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
python -m pip install -q -e ".[dev,slurm]"
python -c "import torch, dm_control, mujoco; print(f'torch {torch.__version__}, mujoco {mujoco.__version__}: ready')"
