"""Glue between Hydra apps and the trainer: validation with one-line user errors, run-dir files."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tdmpc.checkpoint import CheckpointError
from tdmpc.config import ConfigError, to_dataclass, validate


def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit (no traceback for user errors)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def hydra_run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def run_train(cfg: DictConfig, on_trainer: Callable[[Any, Any], None] | None = None) -> float | None:
    """Validate ``cfg``, write ``config.yaml``, train; returns the final eval return (for sweepers).

    ``on_trainer(trainer, train_cfg)`` is called once the :class:`~tdmpc.trainer.Trainer` is built and
    before training starts: the extension point for other packages to add ``update_hooks`` and
    ``checkpoint_extras`` (e.g. an importance tracker) without this module knowing about them.
    """
    from tdmpc.trainer import Trainer

    try:
        tcfg = validate(to_dataclass(cfg))
    except ConfigError as err:
        fail(str(err))
    run_dir = Path(tcfg.run_dir) if tcfg.run_dir else hydra_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.structured(tcfg)
    OmegaConf.save(resolved, run_dir / "config.yaml")
    try:
        trainer = Trainer(tcfg, run_dir, config_dict=OmegaConf.to_container(resolved))
        if on_trainer is not None:
            on_trainer(trainer, tcfg)
        summary = trainer.train()
    except CheckpointError as err:
        fail(str(err))
    return summary.get("eval/return_mean")
