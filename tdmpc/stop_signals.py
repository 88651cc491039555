"""SIGINT/SIGTERM during training: a flag the training loops check, so a run stops at a safe point.

While :meth:`StopSignals.installed` is active (and the signals' handlers are Python's defaults, i.e. not
taken over by e.g. submitit), the first SIGINT/SIGTERM only sets :attr:`StopSignals.signum`; the trainer
finishes its episode, checkpoints and raises :class:`TrainingInterrupted`. During pretraining the trainer
stops at once (:class:`PretrainingStopped`) and resumes from the checkpoint written after seeding. A second
signal raises :class:`TrainingInterrupted` at once, naming the last checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number, as a shell reports it


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM; ``env_step`` is that of the checkpoint to resume from."""

    def __init__(self, signum: int, env_step: int):
        super().__init__(f"interrupted at env step {env_step}; re-run the same command to resume")
        self.signum, self.env_step, self.exit_code = signum, env_step, EXIT_CODES.get(signum, 1)


class PretrainingStopped(Exception):
    """A stop signal arrived during pretraining (the state is not checkpointable until the episode ends)."""


#: Seconds within which the same signal again counts as the first one delivered twice (far below a person's
#: second Ctrl-C, far above the milliseconds between SLURM's signal and the main job's forwarded one).
DUPLICATE_S = 0.25


class StopSignals:
    """The stop flag of one trainer.

    Args:
        announce: prints a console line (called once, when the loops first see the signal).
        last_checkpoint: env step of the last checkpoint written or loaded (``None``: none yet).
    """

    def __init__(self, announce: Callable[[str], None], last_checkpoint: Callable[[], int | None]):
        self.announce = announce
        self.last_checkpoint = last_checkpoint
        self.signum: int | None = None  # set by the handler
        self.pretraining = False  # set by the trainer while it pretrains: the stop is then immediate
        self._announced = False
        self._first = 0.0  # time.monotonic() of the first signal

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT/SIGTERM (while their handlers are Python's defaults) by setting the flag."""
        installed = {}
        if threading.current_thread() is threading.main_thread():
            for sig, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
                if signal.getsignal(sig) is default:
                    installed[sig] = signal.signal(sig, self._handle)
        try:
            yield
        finally:
            for sig, old in installed.items():
                signal.signal(sig, old)

    def _handle(self, signum: int, frame: Any) -> None:
        """Only sets a flag (printing from a signal handler is not safe): the loops check it. The same signal
        again within :data:`DUPLICATE_S` is one stop delivered twice (SLURM signals every process of a job,
        and the main job forwards the signal to its stages' jobs too), not the user's "stop at once"."""
        now = time.monotonic()
        if self.signum is not None:  # the second signal stops at once, from the last checkpoint
            if signum == self.signum and now - self._first < DUPLICATE_S:
                return
            raise TrainingInterrupted(signum, self.last_checkpoint() or 0)
        self.signum, self._first = signum, now

    def requested(self) -> bool:
        """Whether a stop signal arrived; says once on the console what happens next."""
        if self.signum is None:
            return False
        if not self._announced:
            self._announced = True
            when = "now" if self.pretraining else "at the end of this episode, after a checkpoint"
            self.announce(f"[interrupt] {signal.Signals(self.signum).name}: stopping {when} "
                          f"(send it again to stop at once)")
        return True
