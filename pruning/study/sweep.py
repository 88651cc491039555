"""Hydra helpers for sweeps of prune jobs: run-dir naming and the end-of-sweep failure report.

- :func:`register_resolvers` adds ``${run_tag:PATH}``: the name of the training run dir a checkpoint lives
  in (``runs/train/cartpole-swingup/seed1_2026.../checkpoint.pt`` -> ``cartpole-swingup_seed1_2026...``),
  used in ``conf/prune.yaml`` so that jobs of different checkpoints never share a run dir while the
  run dir of a job stays the same when a sweep is re-launched (which is what makes skipping completed
  jobs work).
- :class:`FailedJobsCallback` (``hydra.callbacks`` in ``conf/prune.yaml``): a job that fails writes
  ``error.json`` into its run dir and returns, so the sweep goes on; at the end of the multirun this
  callback lists the jobs that failed in this sweep and exits with status 1.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pruning.study.report import ERROR_FILE


def run_tag(path: str) -> str:
    """``<task dir>_<run dir>`` of a checkpoint path (its two parent folders), safe as a folder name."""
    p = Path(str(path)).expanduser()
    parts = [x for x in (p.parent.parent.name, p.parent.name) if x and x not in (".", "..")]
    tag = "_".join(parts) or "checkpoint"
    return "".join(c if c.isalnum() or c in "-_.=" else "-" for c in tag)


def register_resolvers() -> None:
    """``${run_tag:...}`` and ``${safe_dirname:...}`` (from ``tdmpc.config``) for ``conf/prune.yaml``."""
    from tdmpc.config import safe_dirname

    if not OmegaConf.has_resolver("run_tag"):
        OmegaConf.register_new_resolver("run_tag", run_tag)
    if not OmegaConf.has_resolver("safe_dirname"):
        OmegaConf.register_new_resolver("safe_dirname", safe_dirname)


class FailedJobsCallback(Callback):
    """Exit non-zero after a multirun in which some job wrote ``error.json`` (listing them)."""

    def __init__(self) -> None:
        self.start = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.start = time.time() - 1.0

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        failed = sorted(p for p in sweep_dir.rglob(ERROR_FILE) if p.stat().st_mtime >= self.start)
        if not failed:
            return
        print(f"error: {len(failed)} job(s) of the sweep failed (the others completed):", file=sys.stderr)
        for path in failed:
            try:
                info = json.loads(path.read_text())
                msg = f"{info.get('error')}: {info.get('message')}"
            except (OSError, ValueError):
                msg = "unreadable error.json"
            print(f"  {path.parent}: {msg}", file=sys.stderr)
        sys.stderr.flush()
        sys.exit(1)
