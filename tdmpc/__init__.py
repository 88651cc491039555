
"""The TD-MPC2 agent (see README.md). Importing the package sets the thread defaults of
:mod:`tdmpc.threads` before anything imports torch, and glibc's malloc thresholds (:mod:`tdmpc.allocator`)."""

from tdmpc import allocator, threads  # noqa: F401  (side effect: GOMP_SPINCOUNT default)

allocator.tune()
