"""Thread settings that degrade gracefully when the machine is shared (imported before torch).

PyTorch's CPU wheels run on GNU OpenMP, whose idle workers spin (up to ``GOMP_SPINCOUNT`` = 300 000
polls by default) waiting for the next parallel region. When another process takes a core, the OS
deschedules a spinning worker and every region then waits for it. Measured on a 2-core machine
(``python benchmarks/thread_contention.py repeats=30``, CPU preset with tracking, 2 torch threads, median
update / planned action; ``benchmarks/results/thread_contention.json``):

| setting | quiet | one CPU-bound process beside it |
|---|---:|---:|
| default (300 000 spins) | 90 / 38 ms | 445 / 219 ms |
| ``GOMP_SPINCOUNT=3000`` (the default here) | 111 / 45 ms | 205 / 120 ms |
| ``GOMP_SPINCOUNT=10000`` | 101 / 42 ms | 337 / 212 ms |
| ``OMP_WAIT_POLICY=PASSIVE`` | 177 / 119 ms | 142 / 58 ms |
| 1 thread | 143 / 53 ms | 136 / 51 ms |

``GOMP_SPINCOUNT=3000`` trades ~20 % on a quiet machine for ~2x under contention (where OpenMP's default
is 5x slower than quiet); on a machine that stays loaded, 1 thread per process is best. A value already in
the environment wins. It must be set before the OpenMP runtime starts, i.e. before ``import torch``:
importing ``tdmpc`` (or ``pruning``) sets it.
"""

from __future__ import annotations

import os

os.environ.setdefault("GOMP_SPINCOUNT", "3000")
