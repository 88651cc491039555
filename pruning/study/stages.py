"""Running the main job's stages as subprocesses: output streamed line by line, progress, interruption.

Each stage of :mod:`pruning.study.experiment` is one of the project's command lines (a Hydra multirun).
:func:`run_stage` streams its output to the terminal and, line-buffered, to the stage log (so
``tail -f experiment.log`` follows it), and feeds every line to an optional :class:`JobCounter`, which
prints ``[experiment] prune: 12/64 jobs done, ETA 5.3 min`` as the jobs of a sweep finish.

Interruption: every stage runs in its own session (``start_new_session``), so a Ctrl-C in the terminal
reaches only this process; :func:`stop_signals` turns SIGINT/SIGTERM into :class:`StageInterrupted`
and the waiting code forwards the signal once to every live stage, waits for them to checkpoint and
exit (a second signal is forwarded too: the stages then stop at once, from their last checkpoint), and
re-raises. ``scripts/experiment.py`` prints one line and exits 130 / 143; re-running resumes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number, as a shell reports it
#: Seconds a stage may take to checkpoint and exit after a forwarded stop signal (an episode's end).
STOP_WAIT_S = 600.0

_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()
_PRINT_LOCK = threading.Lock()


class StageFailed(RuntimeError):
    """A stage exited non-zero; the message is one line naming the command and its log."""


class StageInterrupted(Exception):
    """SIGINT/SIGTERM arrived while a stage ran; the stages have been stopped (``signum``)."""

    def __init__(self, signum: int, stage: str = ""):
        super().__init__(f"interrupted during the {stage or 'main job'}; re-run the same command to resume "
                         f"(finished work is kept)")
        self.signum, self.stage, self.exit_code = signum, stage, EXIT_CODES.get(signum, 1)


def say(message: str, log: TextIO | None = None) -> None:
    """One line to the terminal (flushed) and to ``log``."""
    with _PRINT_LOCK:
        print(message, flush=True)
        if log is not None:
            log.write(message + "\n")
            log.flush()


def open_log(path: Path) -> TextIO:
    """``path`` opened for appending, line-buffered (``tail -f`` sees every line as it is written)."""
    return open(path, "a", buffering=1)


class JobCounter:
    """Counts the finished jobs of a sweep from its output and says ``n/N jobs done, ETA``."""

    #: Line fragments printed once per finished prune job (pruning/study/prune_job.py).
    DONE = ("[prune] return ", ": skipped (skip_completed=true)", "(job failed, recorded in ")

    def __init__(self, label: str, total: int, log: TextIO | None = None):
        self.label, self.total, self.log = label, total, log
        self.done = 0
        self.t0 = time.monotonic()
        self._lock = threading.Lock()

    def feed(self, line: str) -> None:
        if not any(frag in line for frag in self.DONE):
            return
        with self._lock:
            self.done += 1
            done, elapsed = self.done, time.monotonic() - self.t0
        eta = f", ETA {elapsed / done * (self.total - done) / 60:.1f} min" if done < self.total else ""
        say(f"[experiment] {self.label}: {done}/{self.total} jobs done{eta}", self.log)


def _forward(signum: int) -> None:
    """``signum`` to every live stage and the processes it started (each stage runs in its own session, so they
    share its process group), e.g. the jobs of ``launcher=local``, which outlived their stopped stage before and
    kept training to the end while the main job waited for them. submitit's local controllers are skipped: on a
    signal they signal their job a second time and kill it a second later (mid-checkpoint); they end by
    themselves when their job has checkpointed and exited."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        for pid in _group_members(proc.pid) or [proc.pid]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)


def _group_members(pgid: int) -> list[int]:
    """The pids of process group ``pgid`` (from ``/proc``; empty where there is none), without submitit's local
    job controllers (``python -m submitit.local._local``)."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # stat: pid (comm) state ppid pgrp ...
                continue
            if b"submitit.local._local" in (entry / "cmdline").read_bytes():
                continue
            members.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
    return members


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGINT/SIGTERM raise :class:`StageInterrupted` in the main thread while the block runs."""
    def handler(signum: int, frame: Any) -> None:
        raise StageInterrupted(signum)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _stream(proc: subprocess.Popen, log: TextIO, counter: JobCounter | None) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        with _PRINT_LOCK:
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
        if counter is not None:
            counter.feed(line)


def _stop_all(err: StageInterrupted, stage: str) -> StageInterrupted:
    """Forward ``err``'s signal to the live stages and wait until every one has exited and its output is
    streamed (forwarding further signals).

    Waits on the processes, not on the streaming threads: a signal that interrupts ``Thread.join`` can
    leave ``is_alive()`` false while the thread still runs (CPython), and leaving then would end the
    process, close the stages' pipes and kill them mid-checkpoint (``BrokenPipeError``). A stage leaves
    :data:`_LIVE` only after its last line was streamed.
    """
    say(f"[experiment] {signal.Signals(err.signum).name}: stopping the {stage} (its jobs checkpoint first)")
    _forward(err.signum)
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline:
        with _LIVE_LOCK:
            if not _LIVE:
                break
        try:
            time.sleep(0.2)
        except StageInterrupted as again:  # a second signal: the stages stop at once
            _forward(again.signum)
    return StageInterrupted(err.signum, stage)


def run_stages(cmds: Sequence[list[str]], logs: Sequence[Path], stage: str,
               counter: JobCounter | None = None, env: dict | None = None, cwd: Path | None = None) -> None:
    """Run ``cmds`` side by side (one thread and subprocess each, output to its log), wait for all.

    Raises :class:`StageFailed` (after all finished) if one exited non-zero, :class:`StageInterrupted`
    on SIGINT/SIGTERM (inside :func:`stop_signals`) after stopping every stage.
    """
    errors: list[str] = []

    def one(cmd: list[str], log_path: Path) -> None:
        try:
            run_one(cmd, log_path)
        except Exception as err:  # the runner itself failed (e.g. the log cannot be opened): the stage failed
            errors.append(f"stage failed to run ({type(err).__name__}: {err}): {shlex.join(cmd)} (log: {log_path})")

    def run_one(cmd: list[str], log_path: Path) -> None:
        broken = None
        with open_log(log_path) as log:
            say("+ " + shlex.join(cmd), log)
            # errors="replace": a stage printing bytes that are not UTF-8 (a library's warning) must not end
            # the reading of its output
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, encoding="utf-8", errors="replace", bufsize=1,
                                    start_new_session=True)
            with _LIVE_LOCK:
                _LIVE.add(proc)
            try:
                try:
                    _stream(proc, log, counter)
                except Exception as err:  # e.g. the log's disk is full: keep the pipe drained so the stage can end
                    broken = f"{type(err).__name__}: {err}"
                    for _ in proc.stdout:
                        pass
                rc = proc.wait()
            finally:
                with _LIVE_LOCK:
                    _LIVE.discard(proc)
        if rc in (130, 143, -signal.SIGINT, -signal.SIGTERM):
            errors.append(f"interrupted (exit status {rc})")
        elif rc != 0:
            errors.append(f"stage failed with exit status {rc}: {shlex.join(cmd)} (log: {log_path})")
        elif broken is not None:
            errors.append(f"stage output could not be logged ({broken}): {shlex.join(cmd)} (log: {log_path})")

    threads = [threading.Thread(target=one, args=(cmd, lg), daemon=True) for cmd, lg in zip(cmds, logs)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.5)
    except StageInterrupted as err:
        raise _stop_all(err, stage) from None
    failed = [e for e in errors if not e.startswith("interrupted")]
    if failed:
        raise StageFailed("; ".join(failed))
    if errors:  # a stage stopped by a signal that did not reach this process (e.g. sent to the job)
        raise StageFailed(f"the {stage} was interrupted; re-run the same command to resume")


def stage_env() -> dict[str, str]:
    """The environment of a stage: no rendering, Hydra's short errors, unbuffered Python output."""
    return {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "disable"), "HYDRA_FULL_ERROR": "0",
            "PYTHONUNBUFFERED": "1"}
