"""Where a result came from: the commit of the code that computed it, and atomic JSON records."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def git_commit() -> str:
    """``HEAD`` of the checkout this code runs from (``+dirty`` with uncommitted changes), or ``unknown``."""
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"



def atomic_write_json(path: Path, data: dict) -> None:
    from tdmpc.logger import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, default=float) + "\n")

