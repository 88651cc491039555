"""Glue between Hydra apps and the trainer: validation with one-line user errors, run-dir files."""

from __future__ import annotations

import sys
from pathlib import Path

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


def run_train(cfg: DictConfig) -> float | None:
    """Validate ``cfg``, write ``config.yaml``, train; returns the final eval return (for sweepers)."""
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
        summary = trainer.train()
    except CheckpointError as err:
        fail(str(err))
    return summary.get("eval/return_mean")
