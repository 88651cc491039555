#!/usr/bin/env bash
# Create .venv and install the project. Installs torch first: on a machine without torch, the CPU wheel
# torch==2.13.0 (pip finds it locally where it is cached); bring your own CUDA build by installing torch
# into .venv before running this script (or set TORCH_SPEC, e.g. TORCH_SPEC="torch==2.5.1").
# Re-running it is fast: the install is skipped while pyproject.toml is unchanged (the sha256 of the
# installed pyproject.toml is kept in .venv/.ca-prune-installed; delete that file to force a reinstall).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
STAMP=.venv/.ca-prune-installed
[ -d .venv ] || "$PYTHON" -m venv .venv
source .venv/bin/activate
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && python -c "import tdmpc, pruning" >/dev/null 2>&1; then
  echo "setup: .venv is up to date (pyproject.toml unchanged since the last install)"
else
  # First install: pip's own progress lines; later reinstalls (pyproject.toml changed): quiet.
  QUIET=""
  [ -f "$STAMP" ] && QUIET="-q"
  python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  if ! python -c "import torch" >/dev/null 2>&1; then
    echo "setup: installing ${TORCH_SPEC:-torch==2.13.0} into .venv ..."
    python -m pip install $QUIET --progress-bar on "${TORCH_SPEC:-torch==2.13.0}"
  fi
  echo "setup: installing ca-prune and its dependencies into .venv (the first time takes a few minutes) ..."
  python -m pip install $QUIET --progress-bar on -e ".[dev,slurm]"
  echo "$WANT" > "$STAMP"
fi
python -c "import torch, dm_control, mujoco; print(f'torch {torch.__version__}, mujoco {mujoco.__version__}: ready')"
