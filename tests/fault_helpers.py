"""Shared helpers of the fault tests (tests/test_faults.py, tests/test_prune_faults.py): file hashes to prove
nothing changed, the one-line error check, and the tiny training command line."""

from __future__ import annotations

import hashlib
from pathlib import Path

from conftest import tiny_cli


def hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> hex digest)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_unchanged(root: Path, before: dict[str, str]) -> None:
    """Every file of ``before`` (a :func:`hashes`) is still there, byte-identical."""
    after = hashes(root)
    assert {k: after.get(k) for k in before} == before


def one_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    return lines[0]


def train_args(run_dir: Path, steps: int = 2000, **overrides) -> list[str]:
    return tiny_cli(steps=steps, eval_freq=1000, **overrides) + [f"hydra.run.dir={run_dir}", "logger=disabled"]
