"""Refuse, with one line, allocations the machine cannot hold - before they are made.

A replay buffer of ``buffer_size`` slots is allocated zeroed up front; on Linux such pages are only
taken from the machine as the buffer fills, so a buffer too large for the machine would be killed by the
OOM killer hours into a run instead of failing at start. Model widths are checked the same way, from the
parameter count of the model built on the ``meta`` device (no memory). The check compares the bytes a
setting needs with the memory available now (``MemAvailable`` of ``/proc/meminfo``; free memory of the
GPU for CUDA tensors) and raises :class:`tdmpc.config.ConfigError` naming the setting.
"""

from __future__ import annotations

import os

import torch

from tdmpc.config import ConfigError

#: Fraction of the available memory one allocation may take (the rest: Python, torch, the simulator).
MAX_FRACTION = 0.9
#: Bytes per float32 parameter while training: value, gradient, two Adam moments, target copy.
TRAIN_BYTES_PER_PARAM = 4 * 5


def available_bytes(device: str | torch.device = "cpu") -> int | None:
    """Memory available for new allocations on ``device`` now, or ``None`` when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def require_fits(nbytes: int, key: str, value: object, what: str, device: str | torch.device = "cpu") -> None:
    """Raise a one-line :class:`ConfigError` naming ``key=value`` when ``nbytes`` do not fit on ``device``."""
    avail = available_bytes(device)
    if avail is not None and nbytes > MAX_FRACTION * avail:
        raise ConfigError(f"invalid config: {key}={value!r}; allowed: a value that fits in memory ({what} needs "
                          f"{gib(nbytes)}, {gib(avail)} available on {torch.device(device).type})")
