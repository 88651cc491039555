"""Train a TD-MPC agent on a dm_control task (Hydra app; see conf/train.yaml).

    python scripts/train.py task=cartpole-swingup steps=100000 seed=1

Writes into the Hydra run dir: config.yaml, train.csv, eval.csv, checkpoint.pt (and a wandb/ folder
when W&B is on). Re-running with the same run dir (``hydra.run.dir=...``) resumes from its checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tdmpc.cli import run_train  # noqa: E402
from tdmpc.config import register_configs  # noqa: E402

register_configs()


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run_train(cfg)


if __name__ == "__main__":
    main()
