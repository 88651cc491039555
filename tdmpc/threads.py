"""Thread settings that degrade gracefully when the machine is shared (imported before torch).

PyTorch's CPU wheels run on GNU OpenMP, whose idle workers spin (up to ``GOMP_SPINCOUNT`` = 300 000
polls by default) waiting for the next parallel region. When another process takes a core, the OS
deschedules a spinning worker and every region then waits for it. Measured on a 2-core machine, CPU
preset with tracking, 2 torch threads, median of 10 (update / planned action):

| setting | quiet | one CPU-bound process beside it |
|---|---:|---:|
| default (300 000 spins) | 73 / 31 ms | 1376 / 984 ms |
| ``GOMP_SPINCOUNT=3000`` | 78 / 32 ms | 176 / 111 ms |
| ``OMP_WAIT_POLICY=PASSIVE`` (no spinning) | 132 / 96 ms | – |
| 1 thread | – | 104 / 40 ms |

So the default here is ``GOMP_SPINCOUNT=3000``: ~5 % slower on a quiet machine, 8x faster than the
default under contention. A value already in the environment wins. It must be set before the OpenMP
runtime starts, i.e. before ``import torch``: importing ``tdmpc`` sets it. On a machine that stays
loaded, 1 thread per process (``num_threads=1``) is faster still.
"""

from __future__ import annotations

import os

os.environ.setdefault("GOMP_SPINCOUNT", "3000")
