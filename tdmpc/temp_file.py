"""Temporary files beside their target, for atomic replacement (write the temporary file, then ``os.replace``).

``tempfile.mkstemp`` creates its file with mode 0600 whatever the umask, and ``os.replace`` keeps that mode, so
checkpoints and logs written that way could not be read by the rest of a group on a shared cluster. A fresh
unique name opened with mode ``"x"`` (fail if it exists) gets the permissions of every other file the run
writes: 0666 minus the umask.
"""

from __future__ import annotations

import glob
import os
import secrets
import time
from pathlib import Path

#: A temporary file (or folder) is taken for abandoned only when its process no longer runs *and* it was not
#: modified for this long: on a shared filesystem the pid may be another host's, whose writer keeps writing.
STALE_AFTER_S = 300.0


def temp_beside(path: Path) -> Path:
    """A name for a temporary file in ``path``'s folder that no other process or call uses (open it with
    mode ``"x"``/``"xb"``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # runs, under another user
        return True
    return True


def abandoned(path: Path, pid: str) -> bool:
    """Whether ``path``, written by process ``pid`` (a string from its name), was left by a process that was
    killed while writing it: ``pid`` is not running here and ``path`` was not modified for ``STALE_AFTER_S``."""
    try:
        idle = time.time() - path.stat().st_mtime
    except OSError:
        return False
    return pid.isdigit() and not pid_alive(int(pid)) and idle > STALE_AFTER_S


def remove_abandoned_dirs(folder: Path, prefix: str) -> None:
    """Remove the temporary folders ``<prefix><pid>-<random>`` in ``folder`` left by processes killed while they
    wrote into them (:func:`abandoned`): an export's or a report's staging folder."""
    import shutil

    for old in folder.glob(f"{glob.escape(prefix)}*-*"):
        if old.is_dir() and abandoned(old, old.name[len(prefix):].split("-")[0]):
            shutil.rmtree(old, ignore_errors=True)


def remove_abandoned_temps(path: Path) -> None:
    """Remove the temporary files of ``path`` (:func:`temp_beside`) left by processes killed while writing
    them (:func:`abandoned`); a checkpoint's holds a whole replay buffer."""
    prefix = f".{path.name}."
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        parts = tmp.name[len(prefix):].split(".")  # pid, token, "tmp"
        if len(parts) == 3 and abandoned(tmp, parts[0]):
            tmp.unlink(missing_ok=True)
