"""Pruning during training (pruning.study.integration.attach_schedule): iterative and one-shot schedules in the
TD-MPC trainer, exact resume from a checkpoint taken mid-schedule, config validation, CLI errors.

Runs use action_repeat=50 (20 agent steps per 1000-env-step cartpole episode) so that each takes seconds;
env_step advances by 50, so the scheduled steps (…10) are never hit exactly and must be detected as passed.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_cfg, tiny_cli

from pruning.config import (
    PruningConfigError,
    ScheduleConfig,
    TrackingConfig,
    schedule_config,
    tracking_config,
)
from pruning.schedule import ratio_at
from pruning.study.integration import (
    CHECKPOINT_KEY,
    PRUNE_STREAM,
    SCHEDULE_KEY,
    attach_schedule,
    attach_tracker,
    resize_for_resume,
    tracker_callback,
)
from pruning.tracker import PARQUET_NAME
from tdmpc.checkpoint import CheckpointError
from tdmpc.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ["encoder", "dynamics", "reward", "qs", "policy", "latent"]
# Tiny model: encoder 32, dynamics / reward / policy 2 x 32, qs 2 members x 2 x 32, latent 16 (2 simplices of 8).
ORIGINAL = {"encoder": 32, "dynamics": 64, "reward": 64, "qs": 128, "policy": 64, "latent": 16}
TOTAL = sum(ORIGINAL.values())  # 368
SLACK = 7  # a latent simplex is 8 channels: up to 7 asked-for channels may stay (the next prune catches up)
SCHEDULE = dict(enabled=True, kind="cosine", target=0.5, start_step=1010, end_step=3110, every=300, metric="fisher")
STEPS = [1310, 1610, 1910, 2210, 2510, 2810, 3110]  # prune_steps() of SCHEDULE


def _trainer(run_dir, steps, **kw):
    return Trainer(tiny_cfg(steps=steps, action_repeat=50, eval_freq=2000, checkpoint_freq=2000, **kw), run_dir)


def _tracking(**schedule):
    return tracking_config({"metrics": ["fisher", "l1", "random"], "snapshot_interval": 20,
                            "schedule": {**SCHEDULE, **schedule}})


def _train(run_dir, steps, cfg=None):
    trainer = _trainer(run_dir, steps)
    tracker_callback(cfg or _tracking())(trainer, trainer.cfg)  # exactly what scripts/train.py does
    trainer.train()
    return trainer


def _channels(trainer) -> dict[str, int]:
    tracker = trainer.checkpoint_extras[CHECKPOINT_KEY].tracker
    out = dict.fromkeys(COMPONENTS, 0)
    for g in tracker.groups:
        out[g.component] += g.size
    return out


def _optimisers_follow_the_model(trainer) -> None:
    """Every optimised tensor is a live model parameter, its Adam moments have its shape and it was
    stepped at every update (the step count survives pruning)."""
    agent = trainer.agent
    live = {id(p) for p in agent.model.parameters()}
    for opt in (agent.optim, agent.pi_optim):
        params = [p for g in opt.param_groups for p in g["params"]]
        assert params and all(id(p) in live for p in params)
        for p in params:
            state = opt.state[p]
            assert state["exp_avg"].shape == p.shape == state["exp_avg_sq"].shape
            assert int(state["step"]) == trainer.updates


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("schedule") / "full"
    return run_dir, _train(run_dir, 4000)


@pytest.mark.slow
def test_iterative_cosine_schedule_during_training(full_run):
    run_dir, trainer = full_run
    rows = pd.read_csv(run_dir / f"{PRUNE_STREAM}.csv")
    assert rows["scheduled_step"].tolist() == STEPS
    assert rows["env_step"].tolist() == [s + 40 for s in STEPS]  # first env step (multiple of 50) past it
    np.testing.assert_allclose(rows["ratio"], [ratio_at(s, 0.5, 1010, 3110, "cosine") for s in STEPS])
    assert (rows["channels_original"] == TOTAL).all()
    want = [math.floor(r * TOTAL + 1e-9) for r in rows["ratio"]]
    assert all(w - SLACK <= got <= w for w, got in zip(want, rows["removed"]))
    assert rows["removed"].iloc[-1] == math.floor(0.5 * TOTAL) == 184  # the last prune reaches the target
    assert (rows["channels"] == TOTAL - rows["removed"]).all()
    # Widths shrink monotonically at the scheduled points, in every component, and so do the parameters.
    for comp in COMPONENTS:
        col = [ORIGINAL[comp], *rows[f"channels_{comp}"]]
        assert all(b <= a for a, b in zip(col, col[1:])), comp
    assert rows["channels"].is_monotonic_decreasing and rows["params"].is_monotonic_decreasing
    assert rows["params"].iloc[-1] < 0.75 * rows["params"].iloc[0]
    assert _channels(trainer) == {c: int(rows[f"channels_{c}"].iloc[-1]) for c in COMPONENTS}
    # Training went on (fine-tuning) to `steps` with the pruned model and stepping optimisers.
    assert trainer.env_step == 4000 and trainer.updates == 80  # 20 pretraining + 60 online updates
    _optimisers_follow_the_model(trainer)
    evals = pd.read_csv(run_dir / "eval.csv")
    assert evals["env_step"].tolist() == [2000, 4000] and np.isfinite(evals["return_mean"]).all()
    assert np.isfinite(trainer.evaluate(1)["return_mean"])
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["extras"][SCHEDULE_KEY]["done"] == len(STEPS)
    assert len(state["extras"][SCHEDULE_KEY]["history"]) == len(STEPS)


@pytest.mark.slow
def test_resume_mid_schedule_equals_an_uninterrupted_run(full_run, tmp_path):
    full_dir, full = full_run
    part_dir = tmp_path / "part"
    _train(part_dir, 2000)  # checkpoint at 2000: 3 of the 7 prunes done
    state = torch.load(part_dir / "checkpoint.pt", weights_only=True)
    assert state["extras"][SCHEDULE_KEY]["done"] == 3
    with open(part_dir / f"{PRUNE_STREAM}.csv", "a") as f:  # a killed run pruned once more after it
        f.write("45,2250,45,2210,0.3,250,368,118,7000,30,50,50,80,24,16\n")
    resumed = _train(part_dir, 4000)  # a new Trainer in the same run dir: resizes, then resumes
    pd.testing.assert_frame_equal(pd.read_csv(full_dir / f"{PRUNE_STREAM}.csv"),
                                  pd.read_csv(part_dir / f"{PRUNE_STREAM}.csv"))
    assert full.agent.model.widths() == resumed.agent.model.widths()
    e_full, e_res = pd.read_csv(full_dir / "eval.csv"), pd.read_csv(part_dir / "eval.csv")
    assert np.array_equal(e_full["return_mean"].values, e_res["return_mean"].values)
    t_full, t_res = pd.read_csv(full_dir / "train.csv"), pd.read_csv(part_dir / "train.csv")
    assert np.array_equal(t_full["episode_return"].values, t_res["episode_return"].values)
    for (k, a), b in zip(full.agent.model.state_dict().items(), resumed.agent.model.state_dict().values()):
        assert torch.equal(a, b), k
    pd.testing.assert_frame_equal(pd.read_parquet(full_dir / PARQUET_NAME), pd.read_parquet(part_dir / PARQUET_NAME))
    _optimisers_follow_the_model(resumed)


def _seeded(tmp_path, schedule: dict):
    """A trainer with one seeding episode in its buffer, a tracker and a schedule (no train() call)."""
    trainer = _trainer(tmp_path, 10_000)
    tracker = attach_tracker(trainer, TrackingConfig(metrics=["fisher", "l1"], snapshot_interval=0))
    pruner = attach_schedule(trainer, tracker, ScheduleConfig(**{**SCHEDULE, **schedule}))
    trainer._run_episode(pretrained=False)  # 20 random transitions, no update
    return trainer, pruner


def _updates_at(trainer, env_step, n=1):
    trainer.env_step = env_step
    trainer._run_updates(n)


def test_per_component_schedule_due_logic_and_latent_pruning(tmp_path):
    trainer, pruner = _seeded(tmp_path, dict(kind="linear", start_step=2000, end_step=2100, every=10,
                                             scope="per_component"))
    assert pruner.steps == list(range(2010, 2101, 10)) and trainer.update_hooks[-1] is pruner
    _updates_at(trainer, 1995, 2)
    assert pruner.history == [] and _channels(trainer) == ORIGINAL
    _updates_at(trainer, 2035, 3)  # 2010, 2020, 2030 passed: one prune, to the ratio of 2030
    assert [r["scheduled_step"] for r in pruner.history] == [2030] and pruner.done == 3
    ratio = ratio_at(2030, 0.5, 2000, 2100, "linear")
    for comp, n in _channels(trainer).items():
        want = math.floor(ratio * ORIGINAL[comp] + 1e-9)
        assert want - SLACK <= ORIGINAL[comp] - n <= want, comp
    _updates_at(trainer, 2100)
    _updates_at(trainer, 5000, 2)
    assert [r["scheduled_step"] for r in pruner.history] == [2030, 2100]
    # Every component, the latent included, lost exactly half of its original channels.
    assert _channels(trainer) == {c: n // 2 for c, n in ORIGINAL.items()}
    assert trainer.agent.model.widths()["encoder"] == [16, 8]
    _optimisers_follow_the_model(trainer)
    # The planner needs nothing: it plans in the (now 8-wide) latent space as before.
    obs = torch.as_tensor(trainer.env.reset()[0])
    for eval_mode in (True, False):
        action = trainer.agent.act(obs, eval_mode=eval_mode)
        assert action.shape == (1,) and bool(torch.isfinite(action).all())


def test_a_due_step_waits_for_the_metrics_first_evidence(tmp_path):
    """With interval=2 the first update is not tracked: fisher scores every channel 0 then, and pruning by
    those scores would remove channels in index order; the due step waits for the first tracked update."""
    trainer = _trainer(tmp_path, 10_000)
    tracker = attach_tracker(trainer, TrackingConfig(metrics=["fisher"], interval=2, snapshot_interval=0))
    pruner = attach_schedule(trainer, tracker, ScheduleConfig(**{**SCHEDULE, "start_step": 500, "end_step": 500,
                                                                 "target": 0.3}))
    trainer._run_episode(pretrained=False)
    _updates_at(trainer, 1000)  # update 1: untracked
    assert pruner.history == [] and not tracker.has_evidence("fisher") and _channels(trainer) == ORIGINAL
    _updates_at(trainer, 1000)  # update 2: tracked, then pruned by its evidence
    assert [r["update"] for r in pruner.history] == [2] and tracker.has_evidence("fisher")
    assert sum(_channels(trainer).values()) < TOTAL


def test_one_shot_prunes_once_and_state_round_trips(tmp_path):
    trainer, pruner = _seeded(tmp_path / "a", dict(start_step=1500, end_step=1500, target=0.3, metric="l1"))
    _updates_at(trainer, 1450)
    assert pruner.history == []
    _updates_at(trainer, 1500, 2)
    _updates_at(trainer, 3000)
    assert len(pruner.history) == 1 and pruner.history[0]["ratio"] == 0.3
    removed = TOTAL - sum(_channels(trainer).values())
    assert math.floor(0.3 * TOTAL) - SLACK <= removed <= math.floor(0.3 * TOTAL)
    state = pruner.state_dict()
    _, twin = _seeded(tmp_path / "b", dict(start_step=1500, end_step=1500, target=0.4, metric="l1"))
    with pytest.raises(CheckpointError, match=r"pruning\.schedule\.target=0\.3, this run has 0\.4; use a new run"):
        twin.load_state_dict(state)
    _, ranked = _seeded(tmp_path / "d", dict(start_step=1500, end_step=1500, target=0.3, metric="l1",
                                             normalize_by="component"))
    with pytest.raises(CheckpointError, match=r"pruning\.schedule\.normalize_by=.*this run has 'component'"):
        ranked.load_state_dict(state)  # ranked another way: not this schedule's continuation
    older = {**state, "config": {k: v for k, v in state["config"].items() if k not in ("smoothing", "normalize",
                                                                                         "normalize_by")}}
    with pytest.raises(CheckpointError, match="channels, the model has"):  # past the settings: only the widths
        _seeded(tmp_path / "e", dict(start_step=1500, end_step=1500, target=0.3, metric="l1"))[1].load_state_dict(older)
    _, dense = _seeded(tmp_path / "c", dict(start_step=1500, end_step=1500, target=0.3, metric="l1"))
    with pytest.raises(CheckpointError, match=f"expects {TOTAL - removed} channels, the model has {TOTAL}"):
        dense.load_state_dict(state)  # the model was not resized to the checkpoint's widths


def test_disabled_schedule_changes_nothing(tmp_path):
    trainer = _trainer(tmp_path, 2000)
    assert resize_for_resume(trainer) == []  # no checkpoint yet
    tracker_callback(TrackingConfig())(trainer, trainer.cfg)
    assert len(trainer.update_hooks) == 1 and list(trainer.checkpoint_extras) == [CHECKPOINT_KEY]
    tracker = trainer.checkpoint_extras[CHECKPOINT_KEY].tracker
    assert attach_schedule(trainer, tracker, ScheduleConfig()) is None
    assert attach_schedule(trainer, tracker, TrackingConfig()) is None and len(trainer.update_hooks) == 1
    assert ScheduleConfig().enabled is False and TrackingConfig().schedule == ScheduleConfig()


@pytest.mark.parametrize(("key", "value"), [
    ("kind", "step"), ("target", 1.0), ("target", -0.1), ("target", True), ("start_step", -1),
    ("every", 0), ("metric", "magnitude"), ("scope", "per_group"), ("min_channels", 0),
    ("smoothing", "window"), ("normalize", "median"), ("enabled", "yes"), ("end_step", 1.5),
])
def test_bad_schedule_values_are_rejected_with_one_line(key, value):
    with pytest.raises(PruningConfigError) as err:
        tracking_config({"schedule": {key: value}})
    msg = str(err.value)
    assert msg.startswith(f"invalid config: pruning.schedule.{key}={value!r}; allowed: ") and "\n" not in msg, msg


def test_schedule_cross_checks_and_unknown_keys():
    with pytest.raises(PruningConfigError, match=r"^invalid config: pruning\.schedule\.end_step=5; allowed: an "
                                                 r"integer >= pruning\.schedule\.start_step=10$"):
        schedule_config({"start_step": 10, "end_step": 5})
    with pytest.raises(PruningConfigError, match=r"unknown key pruning\.schedule\.ratio; allowed: enabled, kind"):
        tracking_config({"schedule": {"ratio": 0.5}})
    with pytest.raises(PruningConfigError, match=r"pruning\.schedule\.metric='fisher'; allowed: a tracked metric"):
        tracking_config({"metrics": ["l1"], "schedule": {"enabled": True}})
    with pytest.raises(PruningConfigError, match=r"^invalid config: pruning\.enabled=False; allowed: true"):
        tracking_config({"enabled": False, "schedule": {"enabled": True}})
    # A disabled schedule is not checked against the tracked metrics; an enabled one may be one-shot.
    assert tracking_config({"metrics": ["l1"]}).schedule.enabled is False
    s = tracking_config({"schedule": {"enabled": True, "start_step": 7, "end_step": 7, "target": 0}}).schedule
    assert (s.start_step, s.end_step, s.target) == (7, 7, 0.0)


@pytest.mark.slow
def test_cli_bad_schedule_value_exits_2_with_one_line(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *tiny_cli(),
                          "pruning.schedule.enabled=true", "pruning.schedule.scope=per_group", "logger=disabled"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"MUJOCO_GL": "disable", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0] == "error: invalid config: pruning.schedule.scope='per_group'; allowed: global|per_component"


@pytest.mark.slow
def test_a_stop_during_pretraining_after_a_prune_resumes_exactly(tmp_path, capsys):
    """A step due during seeding prunes at pretraining's first update, which runs at the seeding checkpoint's env
    step; a stop later in pretraining resumes from that checkpoint. prune.csv used to keep the stopped run's row
    (its env_step is the checkpoint's) and get it again from the resumed run: rows are also cut by update."""
    import signal

    from tdmpc.stop_signals import TrainingInterrupted

    def make(run_dir):
        torch.manual_seed(0)
        trainer = _trainer(run_dir, 3000)  # seed_steps 1000: one seeding episode of 20 transitions
        tracker_callback(_tracking(start_step=500, end_step=500, target=0.3))(trainer, trainer.cfg)
        return trainer

    full = make(tmp_path / "full")
    full.train()
    part = make(tmp_path / "part")

    def stop_at_update_10(trainer, losses):
        if trainer.updates == 10 and trainer.stops.signum is None:
            trainer.stops.signum = signal.SIGINT

    part.update_hooks.append(stop_at_update_10)
    with pytest.raises(TrainingInterrupted):
        part.train()
    assert pd.read_csv(tmp_path / "part" / "prune.csv")["update"].tolist() == [1]
    resumed = make(tmp_path / "part")
    resumed.cfg.resume = True
    resumed.train()
    for name in ("prune.csv", "train.csv", "eval.csv"):
        a, b = (pd.read_csv(tmp_path / d / name).drop(columns=["elapsed_s", "steps_per_s"], errors="ignore")
                for d in ("full", "part"))
        pd.testing.assert_frame_equal(a, b, obj=name)
    assert len(pd.read_csv(tmp_path / "full" / "prune.csv")) == 1
    for x, y in zip(full.agent.model.state_dict().values(), resumed.agent.model.state_dict().values()):
        assert torch.equal(x, y)


def test_a_run_that_seeding_covers_says_that_nothing_trains_or_prunes(tmp_path, capsys):
    """seed_steps=1500 rounds up to two whole episodes (2000 env steps) = steps: no update, so no scheduled prune;
    that used to pass without a word."""
    trainer = _trainer(tmp_path, 2000, seed_steps=1500)
    tracker = attach_tracker(trainer, TrackingConfig(metrics=["fisher", "l1"], snapshot_interval=0))
    attach_schedule(trainer, tracker, ScheduleConfig(**{**SCHEDULE, "start_step": 1000, "end_step": 1000}))
    assert "[prune] note: seeding (whole episodes, 2000 env steps) covers steps=2000" in capsys.readouterr().out
