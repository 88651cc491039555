"""Run-dir ownership: a manifest written first, a lock held for the life of the job, refusals in one line.

Any job that writes into a run dir (a training run, a prune job, the main experiment job) claims it first::

    from tdmpc.run_dir import RunDirError, claim, identity

    settings = {"task": "cartpole-swingup", "seed": 1, ...}  # every setting that changes the result
    try:
        with claim(run_dir, "train", identity(settings), settings=settings) as owned:
            ...  # write the job's files; owned.moved_to is where an old run went (overwrite=True)
    except RunDirError as err:
        fail(str(err))  # one line, nothing of the run dir changed

- ``run.json`` (:data:`MANIFEST`): ``kind`` (``train`` | ``prune`` | ``experiment``), ``identity`` (the
  sha256 of the canonical JSON of the job's settings, :func:`identity`), ``settings`` (optional, so a
  refusal can name the settings that differ), ``source_sha256`` (optional: e.g. the sha256 of the
  checkpoint a prune job starts from, :func:`file_sha256`), ``created`` (UTC, ISO 8601), ``host`` and
  ``pid`` of the process that created the run. It is written (atomically) when a job claims a dir that
  has none, before the job writes anything else, and never rewritten by a later claim.
- ``run.lock`` (:data:`LOCK`): an exclusive ``fcntl.flock`` held from :func:`claim` until
  :meth:`Claim.release` (or the end of the ``with`` block, or the death of the process: the OS drops the
  lock, so a stale lock file never blocks a requeued job). The holder's pid and host are written into it
  for the refusal message of a second process.

:func:`claim` refuses with :class:`RunDirError` (one line) when the path is a file, when another live
process holds the lock, or when the dir is owned by a job of another kind or with another identity or
source (unless ``overwrite=True``: the old run is then moved aside to ``<run dir>.old-<UTC time>``, never
deleted; ``supersede=True`` does the same for a dir of the same kind only: a sweep re-launched after its
source changed re-runs the job and keeps the old result aside, :data:`OLD_MARK`). ``fresh=True`` (a job that starts anew, e.g. training with ``resume=false``) also refuses a dir
that holds any run at all. A dir without a manifest that holds files of a job (not only
:data:`IGNORED` entries, e.g. a run from before manifests existed) is handed to ``check_unowned(run_dir)``,
which returns ``None`` to adopt it or a refusal message. Before refusing, nothing of the dir is changed
(the lock file is created if it was missing, and left empty). A job refused after its claim (e.g. for a
corrupt input) calls :meth:`Claim.withdraw` to take back a manifest the claim created.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

MANIFEST = "run.json"
LOCK = "run.lock"
KINDS = ("train", "prune", "experiment")
#: Entries of a run dir that do not make it "hold a run": the lock, Hydra's own folder and job logs.
IGNORED = (LOCK, ".hydra")
IGNORED_SUFFIXES = (".log",)
#: Set on an exception whose job was refused after its claim had moved a run aside and that moved it back
#: (:meth:`Claim.withdraw`): the dir holds that run again, not the refused job's record.
RUN_RESTORED = "ca_prune_run_restored"
#: Part of the name of a run dir moved aside (:func:`move_aside`); reports leave such dirs out.
OLD_MARK = ".old-"


class RunDirError(RuntimeError):
    """A run dir cannot be used by this job; the message is one line for the user."""


def canonical_json(settings: Any) -> str:
    """``settings`` as JSON with sorted keys and no whitespace (non-JSON values as ``str``)."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)


def identity(settings: Mapping) -> str:
    """The sha256 (hex) of :func:`canonical_json` of ``settings``: equal settings, equal identity."""
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def scheduler_job() -> str | None:
    """This process's SLURM job (``"slurm:<SLURM_JOB_ID>"``, recorded in ``run.json``), else ``None``. A requeued
    SLURM job (preempted, or timed out under submitit) keeps its job id and counts ``SLURM_RESTART_COUNT``."""
    job = os.environ.get("SLURM_JOB_ID")
    return f"slurm:{job}" if job else None


def requeued_into(run_dir: str | Path) -> bool:
    """Whether this process is a restart (``SLURM_RESTART_COUNT`` >= 1) of the SLURM job that created
    ``run_dir``'s ``run.json``: the same command again, which must continue its own run, not start anew."""
    try:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        restarts = 0
    job = scheduler_job()
    if restarts < 1 or job is None:
        return False
    try:
        manifest = read_manifest(run_dir)
    except RunDirError:
        return False
    return manifest is not None and manifest.get("scheduler_job") == job


def remove_if_unused(run_dir: str | Path) -> bool:
    """Remove ``run_dir`` if a refused command left it empty (Hydra creates it before the app runs) or holding
    only an unowned lock file, and then its parents that became empty, up to the working directory. Returns
    whether ``run_dir`` was removed. Never touches a dir with anything else in it."""
    run_dir = Path(run_dir).absolute()
    cwd = Path.cwd().absolute()
    if run_dir == cwd or run_dir in cwd.parents:
        return False
    try:
        if not run_dir.is_dir() or any(p.name != LOCK for p in run_dir.iterdir()):
            return False
        fd = _lock(run_dir)  # only while holding it: a live job may hold it before writing run.json
    except (OSError, RunDirError):
        return False
    try:
        if any(p.name != LOCK for p in run_dir.iterdir()):
            return False
        (run_dir / LOCK).unlink()
        run_dir.rmdir()
    except OSError:
        return False
    finally:
        os.close(fd)
    parent = run_dir.parent
    while parent != cwd and cwd in parent.parents:
        try:
            parent.rmdir()  # only if empty
        except OSError:
            break
        parent = parent.parent
    return True


def read_manifest(run_dir: str | Path) -> dict | None:
    """The run dir's ``run.json``, or ``None`` when it has none; :class:`RunDirError` when unreadable."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunDirError(f"cannot read {path}: {err}; move the run dir aside or use another one") from None
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        raise RunDirError(f"{path} is not a run manifest (no kind in {'|'.join(KINDS)}); use another run dir")
    return data


def holds_run(run_dir: str | Path, also_ignore: tuple[str, ...] = ()) -> bool:
    """True if the dir holds a manifest or any file of a job (anything but :data:`IGNORED` entries and
    ``also_ignore``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return False
    ignored = (*IGNORED, *also_ignore)
    return any(p.name not in ignored and not p.name.endswith(IGNORED_SUFFIXES) for p in run_dir.iterdir())


class Claim:
    """A claimed run dir: holds the lock until :meth:`release` (also a context manager)."""

    def __init__(self, run_dir: Path, manifest: dict, created: bool, fd: int, moved_to: Path | None,
                 moved_because: str | None = None):
        self.run_dir, self.manifest, self.created, self.moved_to = run_dir, manifest, created, moved_to
        self.moved_because = moved_because  # why the old run was moved aside (overwrite or supersede)
        self._fd: int | None = fd

    def withdraw(self, err: BaseException | None = None) -> bool:
        """Remove the manifest this claim created, if the job wrote nothing else into the dir (a job
        refused after its claim, e.g. for a corrupt input, leaves no record that would bind the dir). A run
        this claim moved aside (``overwrite`` / ``supersede``) is moved back: a refused job replaces nothing;
        then ``err`` (the refusal) is marked (:data:`RUN_RESTORED`) so that its failure is not recorded in the
        restored run's dir (:func:`tdmpc.cli.record_failure`). Returns whether the run was moved back."""
        if not (self.created and not holds_run(self.run_dir, also_ignore=(MANIFEST,))):
            return False
        (self.run_dir / MANIFEST).unlink(missing_ok=True)
        if self.moved_to is None or not self.moved_to.is_dir() or holds_run(self.run_dir):
            return False
        try:
            shutil.rmtree(self.run_dir)  # the refused job's lock file, logs and .hydra record only
            os.rename(self.moved_to, self.run_dir)
        except OSError:  # another job took the path meanwhile: the old run stays aside, as moved
            return False
        self.moved_to = None
        if err is not None:
            try:
                setattr(err, RUN_RESTORED, True)
            except AttributeError:  # an exception type without attributes: its failure is recorded as usual
                pass
        return True

    def release(self) -> None:
        """Drop the lock (idempotent); the lock file stays."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _lock(run_dir: Path) -> int:
    """Open ``run.lock`` and take its exclusive flock, or raise :class:`RunDirError` naming the holder.

    The lock taken must be on the file that is ``run_dir/run.lock`` *now*: between opening it and locking it,
    another process may have moved the whole dir aside (``overwrite=true``) and claimed the path anew, and a
    lock on the moved file would let two jobs own one dir. Then the new file is opened and locked instead."""
    while True:
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(f"run dir {run_dir} is in use by another live process ({holder}); wait for it to "
                              f"finish or use another run dir") from None
        try:
            current = os.stat(run_dir / LOCK)
        except FileNotFoundError:
            current = None
        locked = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (locked.st_dev, locked.st_ino):
            return fd
        os.close(fd)  # the dir was moved aside (or the lock file replaced) meanwhile: lock the new one


def _write_holder(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)


def _prepare(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run dir {run_dir} is a file, not a directory; use another run dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"cannot create run dir {run_dir}: {err.strerror}") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunDirError(f"run dir {run_dir} is not writable; use another run dir")


def move_aside(run_dir: Path, mark: str = OLD_MARK) -> Path:
    """Rename ``run_dir`` (a dir or a file) to ``<name><mark><UTC time>`` (with a counter if taken), never
    over an existing path; returns the new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = run_dir.with_name(f"{run_dir.name}{mark}{stamp}")
    n = 1
    while target.exists():
        target = run_dir.with_name(f"{run_dir.name}{mark}{stamp}-{n}")
        n += 1
    os.rename(run_dir, target)
    return target


def settings_diff(old: Mapping, new: Mapping, defaults: Mapping | None = None) -> list[str]:
    """``key=old (this command: new)`` for every differing entry, nested keys '.'-joined.

    A key missing from ``old`` (a setting added to the code after that run was recorded) compares as
    its value in ``defaults`` (the job's default settings), so adding a config key does not make every
    older run refuse to resume while it keeps its default; with ``defaults`` given, a key ``new`` lacks
    (a setting the code no longer has) is not compared.
    """
    from tdmpc.logger import flatten

    a, b = flatten(old), flatten(new)
    d = flatten(defaults) if defaults else {}
    if defaults is not None:  # keys the code no longer has are not compared
        a = {k: v for k, v in a.items() if k in b}
        a.update({k: d[k] for k in d if k not in a and k in b})
    return [f"{k}={a.get(k)!r} (this command: {b.get(k)!r})" for k in sorted(set(a) | set(b))
            if canonical_json(a.get(k)) != canonical_json(b.get(k))]


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def conflict(manifest: dict | None, kind: str, ident: str, settings: Mapping | None,
             source_sha256: str | None, defaults: Mapping | None = None) -> str | None:
    """Why a dir with ``manifest`` is not this job's (one line), or ``None`` if it is.

    Another identity is this job's when the recorded settings equal this job's once the keys the record
    lacks take their ``defaults`` (:func:`settings_diff`): the record is older than a new config key.
    """
    if manifest is None:
        return None
    if manifest["kind"] != kind:
        return f"it belongs to {_a(manifest['kind'])} job, this is {_a(kind)} job"
    if manifest.get("identity") != ident:
        old = manifest.get("settings")
        if not (isinstance(old, Mapping) and settings is not None):
            return f"it holds another {kind} job (identity {str(manifest.get('identity'))[:12]}, this one {ident[:12]})"
        diff = settings_diff(old, settings, defaults)
        if diff:
            return "settings that cannot change differ: " + ", ".join(diff)
    if source_sha256 is not None and manifest.get("source_sha256") not in (None, source_sha256):
        return f"it was started from another source file (sha256 {str(manifest['source_sha256'])[:12]})"
    return None


def claim(run_dir: str | Path, kind: str, ident: str, *, settings: Mapping | None = None,
          source_sha256: str | None = None, fresh: bool = False, overwrite: bool = False,
          check_unowned: Callable[[Path], str | None] | None = None, hint: str = "use another run dir",
          defaults: Mapping | None = None, supersede: bool = False) -> Claim:
    """Claim ``run_dir`` for a ``kind`` job of identity ``ident`` (see the module docstring).

    ``supersede=True`` (a job whose dir name is derived, e.g. a sweep's): a dir owned by a job of the
    same kind with another identity or source is moved aside as with ``overwrite`` (never deleted) and
    this job starts anew there; dirs of another kind are still refused.

    ``defaults``: the job's default settings, for records written before a setting existed
    (:func:`conflict`).

    ``hint`` ends a refusal message (what the user can do), e.g. ``"use another run dir or add
    overwrite=true to move the old run aside"``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; allowed: {'|'.join(KINDS)}")
    run_dir = Path(run_dir)
    _prepare(run_dir)
    fd = _lock(run_dir)
    try:
        reason = _refusal(run_dir, kind, ident, settings, source_sha256, fresh, check_unowned, defaults)
        moved_to = None
        if reason is not None:
            old = read_manifest(run_dir)
            superseded = supersede and not fresh and old is not None and old["kind"] == kind
            if not (overwrite or superseded):
                raise RunDirError(f"run dir {run_dir} cannot be used: {reason}; {hint}")
            moved_to = move_aside(run_dir)
            _prepare(run_dir)
            new_fd = _lock(run_dir)
            os.close(fd)
            fd = new_fd
        manifest = read_manifest(run_dir)
        created = manifest is None
        if created:
            manifest = {"kind": kind, "identity": ident, "settings": dict(settings) if settings else None,
                        "source_sha256": source_sha256, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "host": socket.gethostname(), "pid": os.getpid(), "scheduler_job": scheduler_job()}
            from tdmpc.logger import atomic_write_text

            atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")
        _write_holder(fd)
        return Claim(run_dir, manifest, created, fd, moved_to, reason if moved_to else None)
    except BaseException:
        os.close(fd)
        raise


def _refusal(run_dir: Path, kind: str, ident: str, settings: Mapping | None, source_sha256: str | None,
             fresh: bool, check_unowned: Callable[[Path], str | None] | None,
             defaults: Mapping | None = None) -> str | None:
    """The reason this job may not use ``run_dir`` as it is (``None``: it may)."""
    manifest = read_manifest(run_dir)
    if fresh and holds_run(run_dir):
        return "it already holds a run and this job starts anew"
    if manifest is not None:
        return conflict(manifest, kind, ident, settings, source_sha256, defaults)
    if holds_run(run_dir) and check_unowned is not None:
        return check_unowned(run_dir)
    return None
