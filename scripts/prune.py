"""Prune a trained TD-MPC checkpoint by one importance metric, fine-tune, evaluate, measure (Hydra app).

    python scripts/prune.py checkpoint=RUN_DIR/checkpoint.pt metric=fisher ratio=0.5 scope=global \
        finetune_steps=5000 eval_episodes=10 seed=1
    python scripts/prune.py -m checkpoint=RUN_DIR/checkpoint.pt metric=grad_acc,fisher,bayes,l1,l2,random \
        ratio=0.25,0.5,0.75 seed=1,2,3

Writes result.json (plus train.csv / eval.csv of the fine-tuning and its checkpoint.pt) into the job's
run dir; see pruning/study/prune_job.py. In a multirun a failing job writes error.json and the sweep goes on;
the sweep exits with status 1 at the end if any job failed. Bad settings exit 2 with one line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "disable")  # state-based tasks need no rendering (and no GLFW/X11 noise)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from tdmpc import quiet_start  # noqa: E402  (standard library only)

quiet_start.until_started()  # Ctrl-C during the imports below: one line and exit 130, no traceback
from tdmpc.plugins import load_plugins_or_exit  # noqa: E402

load_plugins_or_exit()  # the user's own metrics / env providers (CA_PRUNE_PLUGINS, docs/extending.md)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pruning.study.prune_cli import run_prune_job_cli  # noqa: E402
from pruning.study.prune_config import register_configs  # noqa: E402
from pruning.study.sweep import register_resolvers  # noqa: E402
from tdmpc.cli import one_line_hydra_errors  # noqa: E402

register_configs()
register_resolvers()
one_line_hydra_errors()  # bad overrides, unknown keys, wrong types: one line, exit code 2
quiet_start.started()


@hydra.main(config_path="../conf", config_name="prune", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run_prune_job_cli(cfg)


if __name__ == "__main__":
    main()
