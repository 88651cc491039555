"""Run every ``python`` block of docs/extending.md, in order and in one namespace: the examples stay true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pruning.metrics import metric_names, unregister

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def test_extending_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {"__name__": "extending_example"}
    try:
        for code in blocks:
            exec(compile(code, str(DOC), "exec"), namespace)
        assert "act_rms" in metric_names()  # registered from outside pruning/
        tracker, policy = namespace["tracker"], namespace["policy"]
        act = tracker.scores("act_rms", normalize="none")
        assert set(act) == {g.name for g in tracker.groups} and all(float(v.min()) > 0 for v in act.values())
        assert policy.encoder[-1].out_features == policy.head[0].in_features < 16  # the coupling was pruned
    finally:
        unregister("act_rms")


_PLUGIN = """
import torch

from pruning.metrics import Evidence, SmoothedMetric, register


@register
class GateAbs(SmoothedMetric):  # a user's metric in a module of their own, outside pruning/
    name = "gate_abs_plugin"
    needs_gates = True

    def signal(self, ev: Evidence) -> torch.Tensor | None:
        return None if ev.gate_mean is None else ev.gate_mean.abs()
"""


@pytest.mark.slow
def test_a_metric_of_the_users_own_module_is_tracked_and_prunes_from_the_commands(tmp_path):
    """The registry is per process: a metric registered in a module of one's own was refused by every command
    (`allowed: grad_acc|...`) and failed in the main job's pruning stage after training. CA_PRUNE_PLUGINS names
    modules that every process imports."""
    import json
    import subprocess
    import sys

    import pandas as pd
    from conftest import tiny_cli

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "my_metrics.py").write_text(_PLUGIN)
    env = {"MUJOCO_GL": "disable", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "WANDB_SILENT": "true",
           "PYTHONPATH": str(tmp_path / "mine"), "CA_PRUNE_PLUGINS": "my_metrics"}

    def run(script, *args, **extra):
        return subprocess.run([sys.executable, str(root / "scripts" / script), *args], cwd=tmp_path, text=True,
                              capture_output=True, timeout=600, env={**env, **extra})

    train = run("train.py", *tiny_cli(steps=3000, seed_steps=1000), "pruning.snapshot_interval=50",
                "pruning.metrics=[gate_abs_plugin,l1]", f"hydra.run.dir={tmp_path / 'run'}", "logger=disabled")
    assert train.returncode == 0, train.stderr[-3000:]
    table = pd.read_parquet(tmp_path / "run" / "importance.parquet")
    assert set(table["metric"]) == {"gate_abs_plugin", "l1"} and (table.loc[table.metric == "gate_abs_plugin",
                                                                             "score"] > 0).any()
    ckpt = f"checkpoint={tmp_path / 'run' / 'checkpoint.pt'}"
    job = run("prune.py", ckpt, "metric=gate_abs_plugin", "ratio=0.5", "finetune_steps=0", "eval_episodes=1",
              f"run_dir={tmp_path / 'job'}", "logger=disabled")
    assert job.returncode == 0, job.stderr[-3000:]
    assert json.loads((tmp_path / "job" / "result.json").read_text())["metric"] == "gate_abs_plugin"
    without = run("prune.py", ckpt, "metric=l1", f"run_dir={tmp_path / 'job2'}", CA_PRUNE_PLUGINS="")
    assert without.returncode == 2 and "['gate_abs_plugin'] that are not registered in this process" in without.stderr
    assert "CA_PRUNE_PLUGINS" in without.stderr and len(without.stderr.strip().splitlines()) == 1
    broken = run("train.py", "steps=10", CA_PRUNE_PLUGINS="my_metrics,not_a_module")
    assert broken.returncode == 2 and broken.stderr == (
        "error: CA_PRUNE_PLUGINS: cannot import 'not_a_module' (ModuleNotFoundError: No module named "
        "'not_a_module'); put its folder on PYTHONPATH\n")
