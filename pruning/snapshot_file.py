"""``importance.parquet`` on disk: atomic writes, and reads that survive a damaged file.

A damaged snapshot file (truncated, random bytes, another schema) must never stop training or a prune
job (issue 11): :func:`read_or_quarantine` warns with one line naming the file, moves it aside to
``importance.parquet.corrupt-<UTC time>`` (never deletes it; a numbered suffix if that name exists) and
returns ``None``, so the caller carries on from its in-memory state: the tracker then rewrites the file
from the snapshots it holds since its checkpoint (earlier rows stay in the file moved aside).
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path


def schema():
    """The columns of ``importance.parquet`` (see :data:`pruning.tracker.COLUMNS`)."""
    import pyarrow as pa

    return pa.schema([("step", pa.int64()), ("component", pa.string()), ("layer", pa.string()),
                      ("channel", pa.int64()), ("metric", pa.string()), ("score", pa.float64())])


def read_table(path: Path):
    """The snapshot table of ``path`` cast to :func:`schema`; raises on an unreadable or foreign file."""
    import pyarrow.parquet as pq

    return pq.read_table(path).select(schema().names).cast(schema())


def quarantine(path: Path) -> Path:
    """Move ``path`` aside to ``<path>.corrupt-<UTC time>[-<n>]`` (never over an existing file)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dst = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while dst.exists():
        dst = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    os.rename(path, dst)
    return dst


def read_or_quarantine(path: Path, what: str = "its rows since the checkpoint are rewritten"):
    """:func:`read_table` of ``path``, ``None`` if it does not exist; a damaged file is moved aside
    (:func:`quarantine`) with a one-line warning on stderr and ``None`` is returned."""
    if not path.exists():
        return None
    try:
        return read_table(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, KeyError (columns), ... for damage
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        dst = quarantine(path)
        print(f"warning: {path} is unreadable ({reason}); moved aside to {dst.name}, {what}",
              file=sys.stderr, flush=True)
        return None


def write_atomic(table, path: Path) -> None:
    """Write ``table`` to ``path`` through a temp file in the same folder and ``os.replace``."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh unique name, not tempfile.mkstemp: its mode 0600 would survive os.replace (tdmpc/temp_file.py)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
