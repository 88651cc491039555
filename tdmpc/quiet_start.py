"""Ctrl-C while a command is still importing its libraries: one line and exit code 130, not a traceback.

The entry points (``scripts/*.py``) spend their first seconds importing torch, dm_control and Hydra; a
``KeyboardInterrupt`` there used to end with a traceback through the import machinery. Nothing has been
written at that point (the run dir comes later), so there is nothing to save: :func:`until_started` makes
SIGINT end the process at once with one line, and :func:`started` hands SIGINT back to Python's handler
(``KeyboardInterrupt``), which the commands catch to save and stop cleanly. Standard library only, so that
it is in place before the heavy imports begin.
"""

from __future__ import annotations

import os
import signal
import sys

#: Exit code of a process ended by SIGINT (128 + 2), as the commands use after Ctrl-C.
EXIT_INTERRUPTED = 130


def _quit(signum, frame) -> None:
    try:
        sys.stderr.write("interrupted while starting (nothing was written)\n")
        sys.stderr.flush()
    finally:
        os._exit(EXIT_INTERRUPTED)  # no unwinding through half-imported modules


def until_started() -> None:
    """Until :func:`started`, SIGINT ends the process with one line and exit code 130. Left alone where SIGINT is
    not Python's default handler (ignored in a background job, or set by an embedding program)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _quit)


def started() -> None:
    """SIGINT raises ``KeyboardInterrupt`` again (only if :func:`until_started` had replaced it)."""
    if signal.getsignal(signal.SIGINT) is _quit:
        signal.signal(signal.SIGINT, signal.default_int_handler)
