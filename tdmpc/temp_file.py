"""Temporary files beside their target, for atomic replacement (write the temporary file, then ``os.replace``).

``tempfile.mkstemp`` creates its file with mode 0600 whatever the umask, and ``os.replace`` keeps that mode, so
checkpoints and logs written that way could not be read by the rest of a group on a shared cluster. A fresh
unique name opened with mode ``"x"`` (fail if it exists) gets the permissions of every other file the run
writes: 0666 minus the umask.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def temp_beside(path: Path) -> Path:
    """A name for a temporary file in ``path``'s folder that no other process or call uses (open it with
    mode ``"x"``/``"xb"``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
