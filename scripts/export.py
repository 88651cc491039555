"""Export a (pruned) TD-MPC checkpoint to ONNX and optionally check it closed-loop (Hydra app).

    python scripts/export.py checkpoint=RUN_DIR/checkpoint.pt format=onnx [out=DIR]
    python scripts/export.py checkpoint=RUN_DIR/checkpoint.pt check=true episodes=5 [mode=plan|policy]

Writes policy.onnx, planner.onnx and controller.json next to the checkpoint (or into out=DIR), see
pruning/study/export.py; check=true runs the exported controller (pruning/deploy.py, onnxruntime) in the task next
to the PyTorch agent on the same env seeds, prints a table and writes check.json (pruning/study/deploy_check.py).
Every key is in ExportConfig (pruning/study/export.py; conf/export.yaml sets only Hydra's options); bad settings
or a missing checkpoint exit 2 with one line.
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

from pruning.study.export import register_configs, run_export_cli  # noqa: E402
from tdmpc.cli import one_line_hydra_errors  # noqa: E402

register_configs()
one_line_hydra_errors()  # bad overrides, unknown keys, wrong types: one line, exit code 2
quiet_start.started()


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> int:
    return run_export_cli(cfg)


if __name__ == "__main__":
    main()
