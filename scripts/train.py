"""Train a TD-MPC agent on a dm_control task (Hydra app; see conf/train.yaml).

    python scripts/train.py task=cartpole-swingup steps=100000 seed=1
    python scripts/train.py pruning.metrics=[grad_acc,fisher,bayes,l1,l2] pruning.interval=1
    python scripts/train.py pruning.enabled=false
    python scripts/train.py pruning.schedule.enabled=true pruning.schedule.target=0.5 \
        pruning.schedule.start_step=20000 pruning.schedule.end_step=60000 pruning.schedule.metric=fisher

Writes into the Hydra run dir: config.yaml, train.csv, eval.csv, checkpoint.pt (and a wandb/ folder
when W&B is on), and importance.parquet: per-channel importance scores tracked during training
(``pruning`` section, conf/pruning/default.yaml; on by default), and prune.csv when a pruning schedule
prunes the agent during training (``pruning.schedule``). Re-running with the same run dir
(``hydra.run.dir=...``) resumes from its checkpoint; run.json and run.lock mark the dir as this run's
(tdmpc/run_dir.py). In a multirun (-m) a failing job writes error.json and the others go on; the
multirun exits 1 at the end. Ctrl-C / SIGTERM save a checkpoint and exit 130 / 143.
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
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from pruning.config import PruningConfigError, tracking_config  # noqa: E402
from pruning.study.integration import tracker_callback  # noqa: E402
from tdmpc.cli import one_line_hydra_errors, run_train  # noqa: E402
from tdmpc.config import ConfigError, register_configs  # noqa: E402

register_configs()
one_line_hydra_errors()  # bad overrides, unknown keys, wrong types: one line, exit code 2
quiet_start.started()


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    def make_on_trainer():
        section = cfg.get("pruning")
        if section is None:  # a config without the pruning section: no tracking
            return None
        try:
            tracking = tracking_config(OmegaConf.to_container(section, resolve=True))
        except PruningConfigError as err:
            raise ConfigError(str(err)) from None
        return tracker_callback(tracking)

    # a setting added to the pruning section after a run was recorded resumes it at its default
    return run_train(cfg, make_on_trainer=make_on_trainer, section_defaults={"pruning": PRUNING_DEFAULTS})


#: The pruning section as composed without overrides (conf/pruning/default.yaml).
PRUNING_DEFAULTS = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "pruning"
                                                         / "default.yaml"))


if __name__ == "__main__":
    main()
