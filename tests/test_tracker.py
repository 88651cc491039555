"""ImportanceTracker on the TD-MPC world model: prune() compatibility, exact resume, importance.parquet,
tracking after pruning, config validation and the scripts/train.py integration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import run_train_cli, tiny_cfg, tiny_cli
from wandb_records import read_wandb_records, wandb_items

from pruning.config import PruningConfigError, TrackingConfig, tracking_config, validate_tracking
from pruning.groups import model_groups
from pruning.metrics import metric_names
from pruning.prune import prune
from pruning.study.integration import CHECKPOINT_KEY, CheckpointedTracker, attach_tracker
from pruning.tracker import COLUMNS, PARQUET_NAME, ImportanceTracker
from tdmpc.agent import TDMPC
from tdmpc.buffer import ReplayBuffer

ROOT = Path(__file__).resolve().parents[1]
OBS, ACT = 5, 1


def make_agent(seed: int = 0):
    torch.manual_seed(seed)
    cfg = tiny_cfg()
    agent = TDMPC(OBS, ACT, 100, cfg, torch.device("cpu"))
    buf = ReplayBuffer(1000, OBS, ACT, cfg.planner.horizon)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(2):
        buf.add_episode(torch.randn(51, OBS, generator=gen), torch.rand(50, ACT, generator=gen) * 2 - 1,
                        torch.rand(50, generator=gen), torch.zeros(50))
    return agent, buf, np.random.default_rng(seed)


def train(agent, buf, rng, tracker, updates: range) -> None:
    """Real TD-MPC updates (world-model + policy losses, clipped gradients), tracker after each."""
    for u in updates:
        agent.update(buf.sample(agent.cfg.optim.batch_size, rng))
        tracker.step(u)


def all_scores(t: ImportanceTracker) -> dict:
    out = {}
    for m in t.cfg.metrics:
        for s in ("ema", "cumulative"):
            for n in ("none", "mean"):
                out[(m, s, n)] = t.scores(m, s, n)
    return out


def test_scores_match_world_model_groups_and_prune_accepts_them():
    agent, buf, rng = make_agent()
    t = ImportanceTracker(agent.model, TrackingConfig(snapshot_interval=0), samples=agent.cfg.optim.batch_size)
    train(agent, buf, rng, t, range(1, 4))
    groups = model_groups(agent.model)
    assert [g.name for g in t.groups] == [g.name for g in groups]
    assert {g.component for g in groups} == {"encoder", "dynamics", "reward", "qs", "policy", "latent"}
    for m in metric_names():
        s = t.scores(m)
        assert list(s) == [g.name for g in groups]
        for g in groups:
            assert s[g.name].shape == (g.size,) and bool(torch.isfinite(s[g.name]).all())
        if m != "random":  # every group receives a gradient signal / has weights
            assert all(float(v.abs().sum()) > 0 for v in s.values()), m
    model = agent.model
    keep = prune(model, t.scores("bayes"), 0.25, optimizers=[agent.optim, agent.pi_optim])
    assert sum(len(v) for v in keep.values()) < sum(g.size for g in groups)


def test_after_pruning_refuses_to_drop_a_tracked_group_silently():
    from tdmpc.world_model import WorldModel

    torch.manual_seed(0)
    model = WorldModel(5, 1, tiny_cfg().model)
    # explicit groups with the latent, a config without it: the rebuilt groups would leave the latent out
    t = ImportanceTracker(model, TrackingConfig(metrics=["random"], prune_latent=False, snapshot_interval=0),
                          groups=model_groups(model))
    keep = prune(model, t.scores("random"), 0.3)
    with pytest.raises(ValueError, match=r"tracked group\(s\) \['latent'\] are not among"):
        t.after_pruning(keep)
    t.after_pruning(keep, groups=model_groups(model))  # the pruned model's groups, latent included: fine
    assert t.scores("random")["latent"].shape == (len(keep["latent"]),)


def test_after_pruning_slices_the_state_and_tracking_continues():
    agent, buf, rng = make_agent()
    t = ImportanceTracker(agent.model, TrackingConfig(snapshot_interval=2), samples=agent.cfg.optim.batch_size)
    train(agent, buf, rng, t, range(1, 5))
    before = {m: t.scores(m, "cumulative", "none") for m in ("fisher", "bayes", "random", "grad_acc")}
    snr_before = t.snr()
    keep = prune(agent.model, t.scores("fisher"), 0.3, optimizers=[agent.optim, agent.pi_optim])
    with pytest.raises(RuntimeError, match="after_pruning"):
        t.step(5)  # stale layout detected, not silently wrong
    t.after_pruning(keep)
    new_groups = model_groups(agent.model)
    for m, old in before.items():
        now = t.scores(m, "cumulative", "none")
        for g in new_groups:
            idx = keep.get(g.name, torch.arange(len(old[g.name])))
            assert now[g.name].shape == (g.size,)
            assert torch.equal(now[g.name], old[g.name][idx]), (m, g.name)
    assert torch.equal(t.snr()["latent"], snr_before["latent"][keep["latent"]])
    train(agent, buf, rng, t, range(5, 8))  # tracking keeps working on the smaller model
    for m in metric_names():
        s = t.scores(m)
        assert [(k, v.shape[0]) for k, v in s.items()] == [(g.name, g.size) for g in new_groups]
    assert t.num_steps == 7
    table = t.snapshot_table().to_pandas()
    sizes = table[(table.metric == "fisher")].groupby("step").size()
    assert sizes.index.tolist() == [2, 4, 6] and sizes[2] == sizes[4] > sizes[6] == sum(g.size for g in new_groups)


def test_state_dict_round_trip_gives_identical_scores_and_parquet(tmp_path):
    """Uninterrupted 8 updates == 5 updates, checkpoint, a killed continuation that flushed rows past the
    checkpoint, then a resume from the checkpoint file (weights_only=True)."""
    cfg = TrackingConfig(snapshot_interval=2)
    agent, buf, rng = make_agent()
    full = ImportanceTracker(agent.model, cfg, run_dir=tmp_path / "full", samples=agent.cfg.optim.batch_size)
    train(agent, buf, rng, full, range(1, 9))
    full.flush()

    agent2, buf2, rng2 = make_agent()
    part = ImportanceTracker(agent2.model, cfg, run_dir=tmp_path / "part", samples=agent2.cfg.optim.batch_size)
    train(agent2, buf2, rng2, part, range(1, 6))
    torch.save({"tracker": CheckpointedTracker(part).state_dict(), "model": agent2.state_dict(),
                "rng": rng2.bit_generator.state, "torch_rng": torch.get_rng_state()}, tmp_path / "ckpt.pt")
    train(agent2, buf2, rng2, part, range(6, 8))  # the killed run goes on and flushes rows 6 ...
    part.flush()
    assert 6 in set(pd.read_parquet(tmp_path / "part" / PARQUET_NAME)["step"])

    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    agent3, buf3, rng3 = make_agent()
    agent3.load_state_dict(state["model"])
    rng3.bit_generator.state = state["rng"]
    torch.set_rng_state(state["torch_rng"])
    resumed = ImportanceTracker(agent3.model, cfg, run_dir=tmp_path / "part", samples=agent3.cfg.optim.batch_size)
    resumed.load_state_dict(state["tracker"])
    train(agent3, buf3, rng3, resumed, range(6, 9))
    resumed.flush()

    a, b = all_scores(full), all_scores(resumed)
    for key in a:
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    for snr_a, snr_b in zip(full.snr().values(), resumed.snr().values()):
        assert torch.equal(snr_a, snr_b)
    df_full = pd.read_parquet(tmp_path / "full" / PARQUET_NAME)
    df_res = pd.read_parquet(tmp_path / "part" / PARQUET_NAME)
    pd.testing.assert_frame_equal(df_full, df_res)
    assert sorted(df_res["step"].unique()) == [2, 4, 6, 8]  # the killed run's rows 6 were replaced, not added


def test_parquet_columns_row_counts_and_values(tmp_path):
    agent, buf, rng = make_agent()
    metrics = ["grad_acc", "fisher", "bayes", "l1"]
    t = ImportanceTracker(agent.model, TrackingConfig(metrics=metrics, snapshot_interval=3), run_dir=tmp_path, samples=agent.cfg.optim.batch_size)
    train(agent, buf, rng, t, range(1, 8))
    assert t.flush() == tmp_path / PARQUET_NAME
    df = pd.read_parquet(tmp_path / PARQUET_NAME)
    assert tuple(df.columns) == COLUMNS
    C = sum(g.size for g in t.groups)
    assert len(df) == 2 * len(metrics) * C  # snapshots at updates 3 and 6
    assert sorted(df["step"].unique()) == [3, 6] and sorted(df["metric"].unique()) == sorted(metrics)
    assert df.dtypes["score"] == np.float64 and df.dtypes["step"] == np.int64
    one = df[(df.step == 6) & (df.metric == "l1")]
    latent = next(g for g in t.groups if g.name == "latent")
    comp = {g.name: g.component for g in t.groups}
    assert (one.groupby("layer", sort=False).size().to_dict()) == {g.name: g.size for g in t.groups}
    assert all(one.component == one.layer.map(comp))
    layer = one[one.layer == "latent"].sort_values("channel")
    assert layer.channel.tolist() == list(range(latent.size))
    # snapshot at 6 stores the raw scores at update 6: re-check with a tracker stopped at 6
    agent2, buf2, rng2 = make_agent()
    t6 = ImportanceTracker(agent2.model, TrackingConfig(metrics=metrics, snapshot_interval=0), samples=agent2.cfg.optim.batch_size)
    train(agent2, buf2, rng2, t6, range(1, 7))
    for m in metrics:
        rows = df[(df.step == 6) & (df.metric == m)]
        got = np.concatenate([rows[rows.layer == g.name].sort_values("channel").score.values for g in t6.groups])
        np.testing.assert_array_equal(got, torch.cat(list(t6.scores(m, normalize="none").values())).numpy())


def test_bad_config_values_are_rejected_with_one_line():
    cases = {"metrics": ["grad_acc", "magnitude"], "interval": 0, "snapshot_interval": -1, "smoothing": "window",
             "beta": 1.0, "normalize": "median", "bayes_kappa": -1.0, "grad_acc_variant": "l3",
             "grad_sq_variant": "full", "seed": -2, "enabled": "yes"}
    for key, value in cases.items():
        with pytest.raises(PruningConfigError) as err:
            tracking_config({key: value})
        msg = str(err.value)
        assert msg.startswith(f"invalid config: pruning.{key}={value!r}; allowed: ") and "\n" not in msg, msg
    with pytest.raises(PruningConfigError, match=r"unknown key pruning\.ratio; allowed: enabled, metrics"):
        tracking_config({"ratio": 0.5})
    with pytest.raises(PruningConfigError, match="metrics"):
        validate_tracking(TrackingConfig(metrics=["l1", "l1"]))
    assert tracking_config(None) == TrackingConfig()


def test_yaml_defaults_equal_the_dataclass_defaults():
    data = yaml.safe_load((ROOT / "conf" / "pruning" / "default.yaml").read_text())
    assert data["metrics"] is None  # null: every registered metric, read from the registry
    assert tracking_config(data).metrics == list(metric_names())
    assert {**data, "metrics": list(metric_names())} == dataclasses.asdict(TrackingConfig())
    assert TrackingConfig().metrics == list(metric_names())


def test_loading_a_state_of_another_configuration_fails_clearly():
    agent, _, _ = make_agent()
    a = ImportanceTracker(agent.model, TrackingConfig(metrics=["fisher"]), samples=agent.cfg.optim.batch_size)
    b = ImportanceTracker(agent.model, TrackingConfig(metrics=["grad_acc"]), samples=agent.cfg.optim.batch_size)
    with pytest.raises(ValueError, match=r"pruning\.metrics=\['fisher'\]"):
        b.load_state_dict(a.state_dict())
    from tdmpc.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="resume=false"):
        CheckpointedTracker(b).load_state_dict(a.state_dict())


def test_attach_tracker_hooks_into_the_trainer(tmp_path):
    from tdmpc.trainer import Trainer

    trainer = Trainer(tiny_cfg(steps=1000), tmp_path)
    assert attach_tracker(trainer, TrackingConfig(enabled=False)) is None
    assert not trainer.update_hooks and not trainer.checkpoint_extras
    t = attach_tracker(trainer, TrackingConfig(snapshot_interval=1))
    trainer._run_episode(pretrained=False)  # seeding only: no update, no hook call
    trainer._run_updates(2)
    assert t.num_steps == 2 and [p["step"] for p in t.pending] == [1, 2]
    state = trainer.state_dict()  # what save_checkpoint writes: flushes the snapshots first
    assert CHECKPOINT_KEY in state["extras"] and state["extras"][CHECKPOINT_KEY]["written_through"] == 2
    assert len(pd.read_parquet(tmp_path / PARQUET_NAME)) == 2 * len(metric_names()) * t.layout.num_channels


@pytest.mark.slow
@pytest.mark.usefixtures("wandb_env")
def test_train_run_logs_its_importance_heatmaps_to_wandb(tmp_path):
    pytest.importorskip("wandb")
    from tdmpc.trainer import Trainer

    cfg = tiny_cfg(steps=2000, action_repeat=50, eval_freq=2000, logger__wandb__mode="offline")
    trainer = Trainer(cfg, tmp_path)
    attach_tracker(trainer, TrackingConfig(snapshot_interval=5, metrics=["fisher", "l1"]))
    trainer.train()
    png = tmp_path / "importance_run.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [log] = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    history = [wandb_items(r.history.item) for r in read_wandb_records(log) if r.WhichOneof("record_type") == "history"]
    assert [h["importance/importance_run/_type"] for h in history if "importance/importance_run/_type" in h] == [
        "image-file"]


@pytest.mark.slow
def test_cli_bad_pruning_value_exits_2_with_one_line(tmp_path):
    res = run_train_cli(["pruning.interval=0", "logger=disabled"], tmp_path)
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0] == "error: invalid config: pruning.interval=0; allowed: an integer >= 1 (updates)"


@pytest.mark.slow
def test_cli_tiny_run_writes_importance_parquet_with_all_metrics_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    # action_repeat=50: 20 agent steps per cartpole episode; 1 seeding episode, 20 pretraining updates.
    common = ["action_repeat=50", "eval_freq=1000", "checkpoint_freq=1000", "pruning.snapshot_interval=10",
              f"hydra.run.dir={run_dir}", "logger=disabled"]
    res = run_train_cli(tiny_cli(steps=2000) + common, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    df = pd.read_parquet(run_dir / PARQUET_NAME)
    assert tuple(df.columns) == COLUMNS and sorted(df["metric"].unique()) == sorted(metric_names())
    assert sorted(df["step"].unique()) == [10, 20, 30, 40]
    assert set(df["component"]) == {"encoder", "dynamics", "reward", "qs", "policy", "latent"}
    assert np.isfinite(df["score"]).all()
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["extras"][CHECKPOINT_KEY]["num_steps"] == 40 == ckpt["counters"]["updates"]
    per_step = df.groupby("step").size()
    res = run_train_cli(tiny_cli(steps=3000) + common, tmp_path)  # resume in the same run dir
    assert res.returncode == 0 and "[resume]" in res.stdout, res.stderr[-2000:]
    df2 = pd.read_parquet(run_dir / PARQUET_NAME)
    assert sorted(df2["step"].unique()) == [10, 20, 30, 40, 50, 60]
    assert (df2.groupby("step").size() == per_step.iloc[0]).all()
    pd.testing.assert_frame_equal(df2[df2.step <= 40].reset_index(drop=True), df)


@pytest.mark.slow
def test_the_final_scores_are_snapshotted_off_the_grid_and_a_resume_drops_that_row(tmp_path):
    """A run shorter than snapshot_interval updates left an empty importance.parquet (and an empty report). The
    end of training is snapshotted too; a run resumed from the final checkpoint drops that row, so it writes the
    same file as an uninterrupted run."""
    run_dir = tmp_path / "run"
    common = ["action_repeat=50", "eval_freq=1000", "checkpoint_freq=1000", "pruning.snapshot_interval=15",
              f"hydra.run.dir={run_dir}", "logger=disabled"]
    res = run_train_cli(tiny_cli(steps=2000) + common, tmp_path)  # 40 updates
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(pd.read_parquet(run_dir / PARQUET_NAME)["step"].unique()) == [15, 30, 40]
    res = run_train_cli(tiny_cli(steps=3000) + common, tmp_path)  # 60 updates: on the grid
    assert res.returncode == 0 and "[resume]" in res.stdout, res.stderr[-2000:]
    assert sorted(pd.read_parquet(run_dir / PARQUET_NAME)["step"].unique()) == [15, 30, 45, 60]
    short = tmp_path / "short"
    res = run_train_cli(tiny_cli(steps=2000) + [*common[:3], "pruning.snapshot_interval=500", f"hydra.run.dir={short}",
                                                 "logger=disabled"], tmp_path)
    assert res.returncode == 0 and sorted(pd.read_parquet(short / PARQUET_NAME)["step"].unique()) == [40]


def test_tracking_with_gate_hooks_leaves_training_bit_identical():
    """The gate hooks (fisher, bayes) only read: the same updates with and without a tracker give
    bit-identical parameters; every group, the latent and the policy included, gets Fisher evidence."""
    tracked, buf_a, rng_a = make_agent()
    plain, buf_b, rng_b = make_agent()
    t = ImportanceTracker(tracked.model, TrackingConfig(snapshot_interval=0), samples=tracked.cfg.optim.batch_size)
    torch.manual_seed(5)
    train(tracked, buf_a, rng_a, t, range(1, 4))
    torch.manual_seed(5)
    for _ in range(3):
        plain.update(buf_b.sample(plain.cfg.optim.batch_size, rng_b))
    for (name, p), q in zip(tracked.model.named_parameters(), plain.model.parameters()):
        assert torch.equal(p, q), name
    assert t.metrics["fisher"].n == 3
    for name, s in t.scores("fisher", normalize="none").items():
        assert float(s.sum()) > 0, name
    t.close()
    assert all(not m._forward_pre_hooks for m in tracked.model.modules())
