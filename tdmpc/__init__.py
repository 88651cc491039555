
"""The TD-MPC2 agent (see README.md). Importing the package sets the thread defaults of
:mod:`tdmpc.threads` before anything imports torch."""

from tdmpc import threads  # noqa: F401  (side effect: GOMP_SPINCOUNT default)
