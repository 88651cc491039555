"""Reading what W&B wrote: the records of an offline run's ``.wandb`` transaction log (shared test helper)."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

# The .wandb file is a LevelDB-style log (wandb 0.31 has no Python reader for it any more; its own reader
# lives in the Go wandb-core): a 7-byte header (":W&B", magic 0xBEE1, version), then 32 KiB blocks of
# chunks, each with a 7-byte header (checksum, length, type: 1 full, 2 first, 3 middle, 4 last); a block
# tail shorter than a chunk header is padding. Every record is a wandb_internal_pb2.Record protobuf.
BLOCK_LEN = 32 * 1024
CHUNK_HEADER_LEN = 7


def read_wandb_records(path: Path, timeout_s: float = 30) -> list:
    """All protobuf records of a finished run's ``run-*.wandb`` transaction log.

    wandb-core writes the log from its own process and may still be writing it after ``run.finish()`` has
    returned (seen on a busy CI machine: an empty log right after finish); wait, up to ``timeout_s``, until
    the log holds the run's closing ``exit`` record.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        records = _parse_wandb_log(path) if path.is_file() else []
        types = [r.WhichOneof("record_type") for r in records]
        if "exit" in types:
            return records
        assert time.monotonic() < deadline, f"{path}: no exit record after {timeout_s} s (records: {types})"
        time.sleep(0.2)


def _parse_wandb_log(path: Path) -> list:
    """The complete records of a ``.wandb`` log (a chunk still being written at the end is left out)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if len(data) < 7:
        return []
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1)
    payloads, partial, pos = [], b"", 7
    while pos + CHUNK_HEADER_LEN <= len(data):
        if BLOCK_LEN - pos % BLOCK_LEN < CHUNK_HEADER_LEN:
            pos += BLOCK_LEN - pos % BLOCK_LEN  # block padding
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER_LEN])
        if pos + CHUNK_HEADER_LEN + length > len(data):
            break  # the writer has not finished this chunk yet
        chunk = data[pos + CHUNK_HEADER_LEN:pos + CHUNK_HEADER_LEN + length]
        pos += CHUNK_HEADER_LEN + length
        if kind == 1:
            payloads.append(chunk)
        elif kind in (2, 3):
            partial = (b"" if kind == 2 else partial) + chunk
        elif kind == 4:
            payloads.append(partial + chunk)
            partial = b""
        else:
            raise AssertionError(f"unknown chunk type {kind} at byte {pos}")
    records = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def wandb_items(update) -> dict[str, object]:
    """Protobuf config/history/summary items -> {key: decoded JSON value}."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in update}
