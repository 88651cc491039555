"""Agent learning, trainer outputs and exact checkpoint/resume, on tiny configs."""

import re

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_cfg

from tdmpc.checkpoint import CheckpointError, load_checkpoint
from tdmpc.config import ConfigError
from tdmpc.trainer import Trainer


def test_world_model_components_contract():
    from tdmpc.world_model import WorldModel

    cfg = tiny_cfg()
    m = WorldModel(5, 1, cfg.model)
    assert set(m.components) == {"encoder", "dynamics", "reward", "qs", "policy"}
    assert len(m.qs) == 2 and m.shape_tied() == [(m.qs, m.target_qs)]
    for name, comp in m.components.items():
        seq_list = comp.members if name == "qs" else [comp]
        for seq in seq_list:
            layers = list(seq)
            for i, layer in enumerate(layers[:-1]):
                if isinstance(layer, torch.nn.Linear) and i + 1 < len(layers) - 0:
                    nxt = layers[i + 1]
                    assert isinstance(nxt, torch.nn.LayerNorm) or i == len(layers) - 1
    assert m.widths()["encoder"] == [32, 16]
    assert m.widths()["qs"] == [32, 32, 21, 32, 32, 21]
    z = m.encode(torch.randn(7, 5))
    assert z.shape == (7, 16) and torch.allclose(z.view(7, 2, 8).sum(-1), torch.ones(7, 2))
    assert m.Q(z, torch.zeros(7, 1), "all").shape == (2, 7, 21)
    assert m.Q(z, torch.zeros(7, 1), "min").shape == (7, 1)


@pytest.mark.slow
def test_a_few_hundred_updates_reduce_the_model_losses(tmp_path):
    trainer = Trainer(tiny_cfg(steps=4000, seed_steps=4000), tmp_path)
    # collect 4 random episodes (500 transitions, seeding: no updates yet) into the buffer
    for _ in range(4):
        trainer._run_episode(pretrained=False)
    assert trainer.updates == 0 and len(trainer.buffer) == 500
    history = []
    for _ in range(300):
        batch = trainer.buffer.sample(trainer.cfg.optim.batch_size, trainer.sample_rng)
        history.append({k: float(v) for k, v in trainer.agent.update(batch).items()})
    df = pd.DataFrame(history)
    first, last = df.iloc[:10].mean(), df.iloc[-20:].mean()
    assert last["reward_loss"] < 0.6 * first["reward_loss"]
    assert last["value_loss"] < 0.8 * first["value_loss"]
    assert last["total_loss"] < 0.7 * first["total_loss"]
    assert np.isfinite(df.values).all()


def _run(tmp_path, name, steps, **kw):
    cfg = tiny_cfg(steps=steps, eval_freq=2000, checkpoint_freq=2000, **kw)
    return Trainer(cfg, tmp_path / name)


@pytest.mark.slow
def test_trainer_writes_logs_and_checkpoint(tmp_path):
    t = _run(tmp_path, "a", 3000)
    summary = t.train()
    run = tmp_path / "a"
    train = pd.read_csv(run / "train.csv")
    evals = pd.read_csv(run / "eval.csv")
    assert list(train["env_step"]) == [1000, 2000, 3000]
    assert list(evals["env_step"]) == [2000, 3000]
    assert train["total_loss"].iloc[:1].isna().all() and train["total_loss"].iloc[1:].notna().all()
    assert summary["env_step"] == 3000 and "eval/return_mean" in summary
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["counters"]["env_step"] == 3000 and state["buffer"]["num_transitions"] == 375
    # resumed from its final checkpoint (e.g. killed in a finish hook): the same evaluation, not a new one
    again = _run(tmp_path, "a", 3000).train()
    assert again["eval/return_mean"] == summary["eval/return_mean"] == evals["return_mean"].iloc[-1]


def test_a_stop_signal_during_the_finish_hooks_is_not_dropped(tmp_path):
    import signal

    from tdmpc.trainer import TrainingInterrupted

    t = _run(tmp_path, "s", 1000)  # seeding only: seconds
    t.finish_hooks.append(lambda tr, summary: setattr(tr.stops, "signum", signal.SIGTERM))  # as the handler does
    with pytest.raises(TrainingInterrupted) as err:
        t.train()
    assert err.value.exit_code == 143


@pytest.mark.parametrize("override, message", [
    ({"buffer_size": 1000, "action_repeat": 1}, "buffer_size=1000; allowed: an integer >= 1001 (an episode of "
                                                "cartpole-swingup at action_repeat=1 is 1000 agent steps"),
    ({"planner__horizon": 130}, "planner.horizon=130; allowed: an integer <= 125"),
])
def test_settings_an_episode_cannot_hold_are_refused_before_training(tmp_path, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Trainer(tiny_cfg(**override), tmp_path / "x")


@pytest.mark.slow
def test_resume_gives_the_same_results_as_an_uninterrupted_run(tmp_path):
    full = _run(tmp_path, "full", 6000)
    full.train()
    part = _run(tmp_path, "part", 4000)  # "killed" right after its checkpoint at 4000 ...
    part.train()
    resumed = _run(tmp_path, "part", 6000)  # ... and resumed in the same run dir
    resumed.train()
    e_full = pd.read_csv(tmp_path / "full" / "eval.csv")
    e_res = pd.read_csv(tmp_path / "part" / "eval.csv")
    assert list(e_res["env_step"]) == [2000, 4000, 6000]
    assert np.array_equal(e_full["return_mean"].values, e_res["return_mean"].values)
    t_full = pd.read_csv(tmp_path / "full" / "train.csv")
    t_res = pd.read_csv(tmp_path / "part" / "train.csv")
    assert np.array_equal(t_full["episode_return"].values, t_res["episode_return"].values)
    assert np.allclose(t_full["total_loss"].values, t_res["total_loss"].values, equal_nan=True)
    for (k, a), b in zip(full.agent.model.state_dict().items(), resumed.agent.model.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.slow
def test_resume_drops_rows_logged_after_the_last_checkpoint(tmp_path):
    t = _run(tmp_path, "r", 3000)
    t.train()  # checkpoint at 3000 (end)
    with open(tmp_path / "r" / "train.csv", "a") as f:  # a killed run logged one more episode
        f.write("400,4000,4,1.0,,,,,,,,,\n")
    _run(tmp_path, "r", 4000).train()
    train = pd.read_csv(tmp_path / "r" / "train.csv")
    assert list(train["env_step"]) == [1000, 2000, 3000, 4000]
    assert train["episode_return"].iloc[-1] != 1.0


@pytest.mark.slow
def test_a_run_is_not_shortened_by_resuming_with_fewer_steps(tmp_path):
    """Resuming a 3000-step run with steps=2000 used to finish at once with exit 0 and rewrite config.yaml to
    steps=2000 beside a 3000-step checkpoint (a main job with fewer train_steps then pruned the longer model)."""
    _run(tmp_path, "r", 3000).train()
    before = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"steps=2000; allowed: >= 3000 \(this run dir's checkpoint is at "
                                          r"env_step 3000"):
        _run(tmp_path, "r", 2000).train()
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == before
    assert _run(tmp_path, "r", 3000).train()["env_step"] == 3000  # the same steps: nothing to do, fine


@pytest.mark.slow
def test_corrupt_and_foreign_checkpoints_give_clear_errors(tmp_path):
    run = tmp_path / "c"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        _run(tmp_path, "c", 2000).train()
    torch.save({"hello": torch.zeros(1)}, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="is not a ca-prune"):
        _run(tmp_path, "c", 2000).train()
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"is a folder; give the checkpoint file in it"):
        load_checkpoint(run)
    (run / "checkpoint.pt").write_bytes(b"garbage\n")  # torch's message advises weights_only=False: not passed on
    with pytest.raises(CheckpointError, match=r"not a torch file of tensors and plain data") as info:
        load_checkpoint(run / "checkpoint.pt")
    assert "weights_only set to False" not in str(info.value) and len(str(info.value).splitlines()) == 1


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_another_task(tmp_path):
    _run(tmp_path, "x", 1000).train()
    with pytest.raises(CheckpointError, match="task="):
        Trainer(tiny_cfg(task="cartpole-balance", steps=2000), tmp_path / "x").train()


def test_the_trainer_resolves_the_task_defaults_into_its_config(tmp_path):
    # TD-MPC2's max(1000, 5 * episode_length) agent steps, in env steps
    t = Trainer(tiny_cfg(seed_steps=None), tmp_path)  # action_repeat null too: cartpole's default 8
    assert (t.cfg.action_repeat, t.cfg.seed_steps, t.seed_steps) == (8, 8000, 8000)  # 1000 agent steps of 8
    assert (t.config_dict["action_repeat"], t.config_dict["seed_steps"]) == (8, 8000)
    assert t.state_dict()["config"]["seed_steps"] == 8000
    w = Trainer(tiny_cfg(task="walker-walk", action_repeat=None, seed_steps=None), tmp_path / "w")
    assert (w.cfg.action_repeat, w.cfg.seed_steps) == (2, 5000)  # 5 episodes of 500 agent steps
    p = Trainer(tiny_cfg(task="Pendulum-v1", action_repeat=None, seed_steps=None), tmp_path / "p")
    assert (p.cfg.action_repeat, p.cfg.seed_steps) == (2, 2000)  # 1000 agent steps (5 episodes are 500)


@pytest.mark.slow
def test_an_older_checkpoint_with_null_task_defaults_still_resumes(tmp_path):
    import torch

    _run(tmp_path, "old", 1000).train()
    path = tmp_path / "old" / "checkpoint.pt"
    state = load_checkpoint(path)
    state["config"]["action_repeat"] = state["config"]["seed_steps"] = None  # as runs wrote it before
    torch.save(state, path)
    t = _run(tmp_path, "old", 2000)
    t.load_checkpoint()
    assert t.env_step == 1000 and t.config_dict["action_repeat"] == 8
    state["config"]["action_repeat"] = 4  # an explicit other value is still refused
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="action_repeat=4"):
        _run(tmp_path, "old", 2000).load_checkpoint()


@pytest.mark.slow
def test_an_interrupted_run_checkpoints_and_its_wandb_run_is_marked_failed(tmp_path, wandb_env):  # noqa: F811
    """A stop signal (here set by an update hook, as the SIGINT handler sets it) ends training at the episode
    end with a checkpoint; the W&B run gets the signal's exit code (130), not 0."""
    import signal

    from test_logger import read_wandb_records

    from tdmpc.trainer import TrainingInterrupted

    pytest.importorskip("wandb")
    t = Trainer(tiny_cfg(steps=4000, eval_freq=2000, logger__wandb__mode="offline"), tmp_path / "w")
    t.update_hooks.append(lambda tr, losses: setattr(tr.stops, "signum", signal.SIGINT) if tr.updates == 130 else None)
    with pytest.raises(TrainingInterrupted, match="interrupted at env step 2000") as err:
        t.train()
    assert err.value.exit_code == 130
    assert load_checkpoint(tmp_path / "w" / "checkpoint.pt")["counters"]["env_step"] == 2000
    [log] = (tmp_path / "w" / "wandb").glob("offline-run-*/run-*.wandb")
    [exit_record] = [r.exit for r in read_wandb_records(log) if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 130


@pytest.mark.slow
def test_seeding_runs_whole_episodes_then_pretrains_before_the_first_own_action(tmp_path):
    """TD-MPC2's order: random actions for the seed steps, then one pretraining update per seed transition, then the
    agent acts. seed_steps=1500 ends inside cartpole's second episode (1000 env steps each): seeding used to stop
    mid-episode, pretrain on the first episode only (125 updates for 188 seed transitions), let the untrained model
    plan, and write no checkpoint at the end of seeding (a stop during pretraining then lost everything)."""
    t = _run(tmp_path, "s", 3000, seed_steps=1500)
    acts, saves, act, save = [], [], t.agent.act, t.save_checkpoint

    def recorded_act(obs, eval_mode=False, noise=None):
        if not eval_mode:
            acts.append((t.env_step, t.updates))
        return act(obs, eval_mode=eval_mode, noise=noise)

    def recorded_save():
        saves.append((t.env_step, t.updates))
        return save()

    t.agent.act, t.save_checkpoint = recorded_act, recorded_save
    t.train()
    assert acts[0] == (2000, 250)  # two whole random episodes (250 agent steps), pretrained on all of them
    assert saves[0] == (2000, 0)  # the checkpoint a stop during pretraining resumes from
    assert t.updates == 250 + 125  # then one update per agent step


@pytest.mark.slow
def test_an_env_whose_episodes_end_early_seeds_until_a_sub_trajectory_fits(tmp_path, monkeypatch):
    """Episodes shorter than horizon + 1 steps hold no sub-trajectory: the first update used to crash ("the replay
    buffer holds no sub-trajectory"); seeding now goes on until one fits."""
    import gymnasium as gym

    import tdmpc.envs as envs

    class Short(gym.Env):  # terminates after 2 steps in its first 30 episodes, then runs 20 steps
        def __init__(self, seed, action_repeat=None, max_episode_steps=None):
            self.action_repeat, self.max_episode_steps, self.episode_length = 1, 20, 20
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
            self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
            self.episodes = 0

        def reset(self, *, seed=None, options=None):
            self.t, self.episodes = 0, self.episodes + 1
            return np.zeros(2, np.float32), {}

        def step(self, action):
            self.t += 1
            term = self.episodes <= 30 and self.t >= 2
            return (np.array([self.t / 20, float(action[0])], np.float32), 1.0, term, self.t >= 20,
                    {"env_steps": 1})

        def get_rng_state(self):
            return {"episodes": self.episodes}

        def set_rng_state(self, state):
            self.episodes = state["episodes"]

    class Provider:
        TASKS = ("Short-v0",)
        make_env = staticmethod(lambda task, seed, action_repeat=None, max_episode_steps=None: Short(seed))
        default_action_repeat = staticmethod(lambda task: 1)

    for name in ("PROVIDERS", "TASKS"):  # restored after the test: the provider is this test's only
        monkeypatch.setattr(envs, name, getattr(envs, name))
    monkeypatch.setattr(envs, "_BY_TASK", dict(envs._BY_TASK))
    envs.register_provider(Provider)
    t = Trainer(tiny_cfg(task="Short-v0", action_repeat=1, seed_steps=10, steps=100, eval_freq=10**6,
                         checkpoint_freq=10**6, buffer_size=1000), tmp_path / "short")
    t.train()
    assert t.episode >= 31 and t.updates > 0  # seeded through the 30 short episodes, then trained
