"""Hydra helpers for sweeps of prune jobs: run-dir naming.

- :func:`register_resolvers` adds ``${run_tag:PATH}``: the name of the training run dir a checkpoint lives
  in (``runs/train/cartpole-swingup/seed1_2026.../checkpoint.pt`` -> ``cartpole-swingup_seed1_2026...``),
  used in ``conf/prune.yaml`` so that the run dir of a job stays the same when a sweep is re-launched
  (which is what makes skipping completed jobs work).
- :class:`CheckpointTagCheck`, a Hydra callback of ``conf/prune.yaml``: the tag is two folder names, so two
  checkpoints of one sweep can share it (``expA/train/cartpole-swingup/seed1`` and ``expB/...``); their jobs
  would then share run dirs and the later would move the earlier's result aside. The callback refuses such
  a sweep before any job starts (one line, exit 2).
- The end-of-sweep failure report is ``tdmpc.launcher.FailedJobsCallback`` (``hydra.callbacks`` in
  ``conf/prune.yaml``), shared with training multiruns: a job that fails records it
  (``tdmpc.cli.record_failure``) and returns, so the sweep goes on; at the end the callback lists the failed
  jobs and exits 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


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


def swept_checkpoints(overrides: list[str]) -> list[str]:
    """The checkpoint paths of a sweep's command-line overrides (``checkpoint=a,b`` or one path)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for o in OverridesParser.create().parse_overrides(overrides):
        if o.key_or_group == "checkpoint":
            values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
            return [str(getattr(v, "text", v)) for v in values]
    return []


def tag_collisions(paths: list[str]) -> list[tuple[str, list[str]]]:
    """``(tag, paths)`` for every :func:`run_tag` that distinct checkpoint files share."""
    by_tag: dict[str, set[str]] = {}
    for p in paths:
        by_tag.setdefault(run_tag(p), set()).add(str(Path(p).expanduser().resolve()))
    return [(tag, sorted(ps)) for tag, ps in by_tag.items() if len(ps) > 1]


class CheckpointTagCheck(Callback):
    """At the start of a prune multirun: refuse checkpoints that share a run tag (see the module doc)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        clashes = tag_collisions(swept_checkpoints(list(config.hydra.overrides.task)))
        if clashes:
            tag, paths = clashes[0]
            print(f"error: invalid config: checkpoint={','.join(paths)}; allowed: checkpoints whose two parent "
                  f"folders differ (both would run in .../{tag}/...: give one sweep per experiment, or set "
                  f"hydra.sweep.subdir to include more of the path)", file=sys.stderr, flush=True)
            sys.exit(2)
