"""The main job: train with importance tracking, prune by every metric, fine-tune, evaluate, report.

    python scripts/experiment.py                         # ~20 min on 2 cores, ends with the summary table
    python scripts/experiment.py experiment=paper        # full protocol on a SLURM GPU cluster

See pruning/study/experiment.py and conf/experiment.yaml. Outputs go to runs/experiment/<name>/ (train/,
prune/, report/ with results.csv, summary.md and the plots).
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

from pruning.config import PruningConfigError  # noqa: E402
from pruning.study.experiment import ExperimentConfig, register_configs, run_experiment, validate_experiment  # noqa: E402
from pruning.study.stages import StageInterrupted  # noqa: E402
from tdmpc.cli import fail, one_line_hydra_errors  # noqa: E402
from tdmpc.config import ConfigError, from_dict  # noqa: E402
from tdmpc.run_dir import RunDirError  # noqa: E402

register_configs()
one_line_hydra_errors()  # bad overrides, unknown keys, wrong types: one line, exit code 2
quiet_start.started()


@hydra.main(config_path="../conf", config_name="experiment", version_base="1.3")
def main(cfg: DictConfig) -> None:
    data = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"}
    try:
        exp = validate_experiment(from_dict(ExperimentConfig, data))
    except (PruningConfigError, ConfigError) as err:
        fail(str(err))
    try:
        run_experiment(exp)
    except StageInterrupted as err:  # Ctrl-C / SIGTERM: every stage checkpointed and stopped
        print(str(err), file=sys.stderr, flush=True)
        sys.exit(err.exit_code)
    except RunDirError as err:
        fail(str(err))
    except (PruningConfigError, ConfigError) as err:
        fail(str(err))
    except RuntimeError as err:  # a failed stage (its log is named)
        fail(str(err), code=1)


if __name__ == "__main__":
    main()
