"""Atomic checkpoint files and RNG-state capture.

Checkpoints are written to a temporary file in the same directory, flushed and fsync'ed, then renamed
over the target (``os.replace`` is atomic on POSIX), so a run killed mid-write never leaves a truncated
checkpoint. They are loaded with ``torch.load(..., weights_only=True)``: only tensors, plain containers
and numbers are unpickled, so a checkpoint handed in by a user cannot execute code.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from pathlib import Path

import numpy as np
import torch

from tdmpc.temp_file import remove_abandoned_temps, temp_beside

CHECKPOINT_FORMAT = "ca-prune/tdmpc-checkpoint/v1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or not one of ours; the message is one line for the user."""


def save_atomic(obj: dict, path: str | Path) -> Path:
    """``torch.save`` to ``path`` through a temp file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temps(path)  # left by a run killed while it wrote this checkpoint
    tmp = temp_beside(path)
    try:
        with open(tmp, "xb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | Path, expected_format: str = CHECKPOINT_FORMAT) -> dict:
    """Load a checkpoint safely (``weights_only=True``), with one-line errors for every failure."""
    path = _existing(path)
    return _checked(_torch_load(path, path), path, expected_format)


def read_checkpoint(path: str | Path, expected_format: str = CHECKPOINT_FORMAT) -> tuple[dict, str]:
    """``(state, sha256)`` of a checkpoint from **one read** of its bytes, as :func:`load_checkpoint`: the hex
    sha256 names exactly the bytes the state was loaded from, even if the file is replaced meanwhile (a
    training run writing its next checkpoint). The bytes are held in memory while loading: for exports and
    checks that record the hash, not for resuming a run."""
    path = _existing(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from err
    return _checked(_torch_load(io.BytesIO(data), path), path, expected_format), hashlib.sha256(data).hexdigest()


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; give the checkpoint file in it (e.g. {path / 'checkpoint.pt'})")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def _torch_load(source: Path | io.BytesIO, path: Path) -> object:
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, foreign pickle, truncated write by another tool ...
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        if "Weights only load failed" in text:  # torch's advice to retry with weights_only=False is unsafe here
            reason = text.split("WeightsUnpickler error:")[-1].strip().splitlines()[0] if "WeightsUnpickler error:" \
                in text else ""
            first = ("not a torch file of tensors and plain data (refused by torch.load(weights_only=True)"
                     + (f": {reason}" if reason else "") + ")")
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from err


def _checked(state: object, path: Path, expected_format: str) -> dict:
    if not isinstance(state, dict) or state.get("format") != expected_format:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a {expected_format} checkpoint (found format {found!r})")
    return state


def get_rng_states() -> dict:
    """Global RNG states of python, numpy and torch (CPU and CUDA), in weights_only-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": _to_lists(random.getstate()),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict) -> None:
    random.setstate(_to_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x
