"""Thread settings that degrade gracefully when the machine is shared (imported before torch).

Measured on the 2-core machines of this project while other processes loaded both cores (load average
3.5-3.8): one CPU-preset update took 628-843 ms with 2 torch threads and OpenMP's default wait policy,
96-159 ms with ``OMP_WAIT_POLICY=PASSIVE`` and 135-145 ms with 1 thread. The default policy lets idle
OpenMP workers spin for the next parallel region; when the OS deschedules one of them, every region
waits for it, so throughput collapses far below the fair share. ``PASSIVE`` makes idle workers sleep.
It is set here as a default only (a value in the environment wins), and it must be set before the
OpenMP runtime starts, i.e. before ``import torch``: ``tdmpc`` and ``pruning`` import this module first.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

