"""Hydra helpers for sweeps of prune jobs: run-dir naming.

- :func:`register_resolvers` adds ``${run_tag:PATH}``: the name of the training run dir a checkpoint lives
  in (``runs/train/cartpole-swingup/seed1_2026.../checkpoint.pt`` -> ``cartpole-swingup_seed1_2026...``),
  used in ``conf/prune.yaml`` so that jobs of different checkpoints never share a run dir while the
  run dir of a job stays the same when a sweep is re-launched (which is what makes skipping completed
  jobs work).
- The end-of-sweep failure report is ``tdmpc.launcher.FailedJobsCallback`` (``hydra.callbacks`` in
  ``conf/prune.yaml``), shared with training multiruns: a job that fails writes ``error.json`` into its
  run dir and returns, so the sweep goes on; at the end the callback lists the failed jobs and exits 1.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


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
