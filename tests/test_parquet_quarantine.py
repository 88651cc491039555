"""A damaged ``importance.parquet`` never stops training or a prune job (issue 11, point 7): it is moved aside
byte-identical to ``importance.parquet.corrupt-<UTC time>`` with a one-line warning naming it, and the
tracker writes the file anew from the snapshots it holds since its checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn
from conftest import run_train_cli, tiny_cli

from pruning.config import TrackingConfig
from pruning.study.integration import log_importance_images
from pruning.tracker import COLUMNS, PARQUET_NAME, ImportanceTracker


def damage(path: Path, how: str) -> bytes:
    """Truncate ``path`` to half or replace it by random bytes; returns the damaged bytes."""
    data = path.read_bytes()[: path.stat().st_size // 2] if how == "truncated" else os.urandom(3000)
    path.write_bytes(data)
    return data


def warnings_in(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("warning:") and PARQUET_NAME in ln]


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))

    @property
    def components(self):
        return {"a": self.a}


@pytest.mark.parametrize("how", ["truncated", "random"])
def test_flush_moves_a_damaged_file_aside_and_rewrites_the_pending_snapshots(tmp_path, capsys, how):
    torch.manual_seed(0)
    model = Tiny()
    t = ImportanceTracker(model, TrackingConfig(metrics=["grad_acc", "l2"], snapshot_interval=1), run_dir=tmp_path)
    for step in (1, 2):
        model.a(torch.randn(5, 3)).sum().backward()
        t.step(step)
    t.flush()  # the "checkpoint": rows of steps 1, 2
    bad = damage(tmp_path / PARQUET_NAME, how)
    model.a(torch.randn(5, 3)).sum().backward()
    t.step(3)
    assert t.flush() == tmp_path / PARQUET_NAME  # does not raise
    [line] = warnings_in(capsys.readouterr().err)
    [aside] = list(tmp_path.glob(f"{PARQUET_NAME}.corrupt-*"))
    assert str(tmp_path / PARQUET_NAME) in line and aside.name in line
    assert aside.read_bytes() == bad
    df = pd.read_parquet(tmp_path / PARQUET_NAME)
    assert tuple(df.columns) == COLUMNS and sorted(df["step"].unique()) == [3]  # held since the checkpoint
    assert len(df) == 2 * 4  # two metrics x four channels
    # reading the snapshots of a damaged file (a second one) does not raise either
    bad2 = damage(tmp_path / PARQUET_NAME, how)
    assert t.snapshot_table().num_rows == 0 and len(list(tmp_path.glob(f"{PARQUET_NAME}.corrupt-*"))) == 2
    assert bad2 in [p.read_bytes() for p in tmp_path.glob(f"{PARQUET_NAME}.corrupt-*")]


def test_importance_images_of_a_damaged_file_are_skipped_and_the_file_left_alone(tmp_path, capsys):
    """A prune job reads the training run's file for its W&B images: damage costs the images only."""
    path = tmp_path / PARQUET_NAME
    path.write_bytes(b"PAR1 not really")

    class Logger:
        wandb_run = object()

        def log_image(self, *a):  # pragma: no cover - must not be reached
            raise AssertionError("no image expected")

    assert log_importance_images(Logger(), path, tmp_path / "out") == []
    [line] = warnings_in(capsys.readouterr().err)
    assert str(path) in line and path.read_bytes() == b"PAR1 not really"


@pytest.mark.slow
def test_training_resumes_past_a_damaged_file_to_the_end(tmp_path):
    run_dir = tmp_path / "run"
    common = ["action_repeat=50", "eval_freq=1000", "checkpoint_freq=1000", "pruning.snapshot_interval=10",
              f"hydra.run.dir={run_dir}", "logger=disabled"]
    res = run_train_cli(tiny_cli(steps=2000) + common, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(pd.read_parquet(run_dir / PARQUET_NAME)["step"].unique()) == [10, 20, 30, 40]
    bad = damage(run_dir / PARQUET_NAME, "random")
    res = run_train_cli(tiny_cli(steps=3000) + common, tmp_path)  # resume; checkpoints at 3000 and the end
    assert res.returncode == 0, res.stderr[-2000:]
    [line] = warnings_in(res.stderr)
    [aside] = list(run_dir.glob(f"{PARQUET_NAME}.corrupt-*"))
    assert aside.name in line and aside.read_bytes() == bad
    df = pd.read_parquet(run_dir / PARQUET_NAME)
    assert sorted(df["step"].unique()) == [50, 60] and df["score"].notna().all()
