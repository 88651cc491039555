"""The run's CSV files: atomic writes, and repairs after a crash or before a resume.

Every row of a stream file (``train.csv``, ``eval.csv``, ...) ends with ``\\n`` and is flushed when logged
(:class:`tdmpc.logger.Logger`), so a crash can leave at most a partial last line
(:func:`drop_partial_last_line`); a resumed run drops the rows logged after its checkpoint
(:func:`drop_rows_after`). Whole files are replaced atomically (:func:`atomic_write_text`).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from tdmpc.temp_file import temp_beside


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    tmp = temp_beside(path)
    try:
        with open(tmp, "x") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def drop_partial_last_line(path: Path) -> None:
    """Cut a last row that a crash left without its newline (every complete row ends with '\\n')."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def read_header(path: Path) -> list[str] | None:
    with open(path, newline="") as f:
        return next(csv.reader(f), None)


def drop_rows_after(path: Path, columns: list[str], after_env_step: float, after_updates: float | None = None) -> None:
    """Rewrite a CSV file (atomically) without its rows past ``after_env_step`` (see ``_env_step_at_most``), and,
    with ``after_updates``, without rows whose ``update`` column is past it (rows logged by updates that share
    the checkpoint's env step: pretraining's burst of updates runs between two env steps).

    A file without an env_step column is left as it is.
    """
    if "env_step" not in columns:
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, fieldnames=columns))[1:]  # [0] is the header
    kept = [r for r in rows if _env_step_at_most(r, after_env_step)
            and (after_updates is None or _at_most(r.get("update"), after_updates))]
    if len(kept) == len(rows):
        return
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept)
    atomic_write_text(path, out.getvalue())


def _at_most(value: str | None, limit: float) -> bool:
    """Whether a cell is empty / absent or a number <= ``limit`` (not NaN)."""
    if value is None or value == "":
        return True
    try:
        return float(value) <= limit  # NaN compares False
    except ValueError:
        return False


def _env_step_at_most(row: dict[str, str | None], after_env_step: float) -> bool:
    """Whether a CSV row survives ``truncate``: env_step <= after_env_step, or no env_step value."""
    if any(v is None for v in row.values()) or None in row:
        return False  # short or over-long row: written by a crash, drop it
    return _at_most(row.get("env_step"), after_env_step)
