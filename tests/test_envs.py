"""Tests of the environment providers (tdmpc.envs): the dm_control wrapper, gymnasium tasks, the protocol."""

import numpy as np
import pytest
import torch
from dm_control import suite
from gymnasium.utils.env_checker import check_env

from tdmpc.envs import TASKS, UnknownTaskError, default_action_repeat, make_env


def _flat(observation) -> np.ndarray:
    """A raw dm_control observation dict flattened the way the wrapper does it."""
    return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in observation.values()])


def test_task_names_cover_the_suite():
    from tdmpc.envs.dm_control import TASKS as DM_TASKS

    for name in ("cartpole-swingup", "cheetah-run", "walker-walk", "reacher-easy", "finger-spin", "cup-catch",
                 "point-mass-easy", "finger-turn-hard"):
        assert name in DM_TASKS and name in TASKS
    from tdmpc.envs.dm_control import UNSUPPORTED

    assert sorted(UNSUPPORTED) == ["lqr-lqr-2-1", "lqr-lqr-6-2"]  # unbounded actuators: not served
    assert len(DM_TASKS) + len(UNSUPPORTED) == len(suite.ALL_TASKS) and len(DM_TASKS) == len(set(DM_TASKS))
    assert list(DM_TASKS) == sorted(DM_TASKS)
    assert all("_" not in name for name in DM_TASKS)


def test_unknown_task_lists_valid_names_and_suggests():
    with pytest.raises(UnknownTaskError) as err:
        make_env("cartpole-swingupp", 0)
    msg = str(err.value)
    assert "unknown task 'cartpole-swingupp'" in msg
    assert "valid tasks: " + ", ".join(TASKS) in msg
    assert "did you mean 'cartpole-swingup'?" in msg
    assert isinstance(err.value, ValueError)
    with pytest.raises(UnknownTaskError) as err:
        default_action_repeat("zzzzzzzz")
    assert "did you mean" not in str(err.value)


@pytest.mark.filterwarnings("ignore:.*infinity:UserWarning")  # the spec asks for an unbounded Box
def test_gymnasium_env_checker_passes():
    env = make_env("cartpole-swingup", 0, max_episode_steps=100)
    check_env(env, skip_render_check=True)
    env.close()


def test_spaces_and_clipping():
    env = make_env("walker-walk", 0, max_episode_steps=20)
    obs, info = env.reset(seed=0)
    assert info == {}
    assert obs.shape == env.observation_space.shape == (24,) and obs.dtype == np.float32
    assert env.observation_space.dtype == np.float32
    assert env.action_space.shape == (6,) and env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    obs, r, term, trunc, info = env.step(np.full(6, 5.0))  # out of bounds: clipped, no error
    assert obs.dtype == np.float32 and isinstance(r, float)
    assert info["env_steps"] == 2 and not term and not trunc
    assert np.array_equal(env._env.physics.data.ctrl, np.ones(6))


def test_actions_are_rescaled_to_the_task_bounds():
    env = make_env("quadruped-walk", 0, action_repeat=1, max_episode_steps=10)
    spec = env._env.action_spec()
    assert not np.all(spec.minimum == -1)  # quadruped has non-unit bounds
    env.reset()
    for action, expected in ((-1.0, spec.minimum), (1.0, spec.maximum), (0.0, (spec.minimum + spec.maximum) / 2)):
        env.step(np.full(env.action_space.shape, action, dtype=np.float32))
        assert np.allclose(env._env.physics.data.ctrl, expected)
    env.step(np.full(env.action_space.shape, -3.0))
    assert np.allclose(env._env.physics.data.ctrl, spec.minimum)


def test_action_repeat_sums_rewards_like_raw_env():
    env = make_env("cartpole-swingup", 3, action_repeat=4)
    raw = suite.load("cartpole", "swingup", task_kwargs={"random": 3})
    obs, _ = env.reset()
    ts = raw.reset()
    assert np.array_equal(obs, _flat(ts.observation))
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.uniform(-1, 1, size=1).astype(np.float32)
        obs, r, _, _, info = env.step(a)
        total = 0.0
        for _ in range(4):
            ts = raw.step(a.astype(np.float64))
            total += ts.reward
        assert info["env_steps"] == 4
        assert r == pytest.approx(total, abs=1e-9)
        assert np.array_equal(obs, _flat(ts.observation))


def test_episode_length_and_truncation():
    env = make_env("cartpole-swingup", 0)
    assert env.action_repeat == 8 and env.max_episode_steps == 1000 and env.episode_length == 125
    assert env.task_name == "cartpole-swingup"
    env.reset()
    n, done = 0, False
    while not done:
        _, _, term, trunc, _ = env.step(np.zeros(1))
        n, done = n + 1, term or trunc
        assert not term
    assert n == 125 and trunc

    short = make_env("cartpole-swingup", 0, action_repeat=3, max_episode_steps=10)
    assert short.episode_length == 4
    short.reset()
    steps = [short.step(np.zeros(1)) for _ in range(4)]
    assert [s[4]["env_steps"] for s in steps] == [3, 3, 3, 1]
    assert [s[3] for s in steps] == [False, False, False, True]
    assert not any(s[2] for s in steps)


def test_limit_beyond_dm_controls_own_is_honoured():
    env = make_env("cartpole-balance", 0, action_repeat=8, max_episode_steps=1200)
    assert env.episode_length == 150
    env.reset()
    truncs = [env.step(np.zeros(1))[3] for _ in range(150)]
    assert truncs == [False] * 149 + [True]


def test_step_needs_reset():
    env = make_env("cartpole-swingup", 0, action_repeat=2, max_episode_steps=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1))
    env.reset()
    assert env.step(np.zeros(1))[3]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1))
    env.reset()
    assert env.step(np.zeros(1))[4]["env_steps"] == 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="action_repeat"):
        make_env("cartpole-swingup", 0, action_repeat=0)
    with pytest.raises(ValueError, match="max_episode_steps"):
        make_env("cartpole-swingup", 0, max_episode_steps=0)


def test_default_action_repeat():
    assert default_action_repeat("cartpole-balance") == 8
    assert default_action_repeat("cartpole-swingup-sparse") == 8
    assert default_action_repeat("walker-run") == 2
    assert default_action_repeat("finger-spin") == 2
    assert default_action_repeat("finger-turn-hard") == 2
    assert default_action_repeat("cheetah-run") == 4
    assert default_action_repeat("cup-catch") == 4
    assert default_action_repeat("reacher-easy") == 4
    assert make_env("walker-walk", 0).action_repeat == 2
    assert make_env("walker-walk", 0, action_repeat=5).action_repeat == 5


def _rollout(env, actions, seed=None):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for a in actions:
        out.append(env.step(a)[0])
    return np.stack(out)


def test_seeding_is_deterministic():
    actions = np.random.default_rng(1).uniform(-1, 1, size=(10, 2))
    a = _rollout(make_env("reacher-easy", 5, max_episode_steps=100), actions)
    b = _rollout(make_env("reacher-easy", 5, max_episode_steps=100), actions)
    c = _rollout(make_env("reacher-easy", 6, max_episode_steps=100), actions)
    assert np.array_equal(a, b)
    assert not np.allclose(a[0], c[0])
    env = make_env("reacher-easy", 5, max_episode_steps=100)
    d = _rollout(env, actions, seed=11)
    e = _rollout(env, actions, seed=11)
    f = _rollout(env, actions, seed=12)
    assert np.array_equal(d, e)
    assert not np.allclose(d[0], f[0])
    # reset(seed=s) restarts the same episode sequence as make_env(..., seed=s)
    g = _rollout(env, actions, seed=5)
    assert np.array_equal(g, a)


def test_rng_state_round_trip_through_torch_save(tmp_path):
    env = make_env("reacher-easy", 2, max_episode_steps=20)
    env.reset()
    state = env.get_rng_state()
    obs_a, _ = env.reset()
    torch.save({"env": state}, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)["env"]
    assert loaded == state
    obs_other, _ = env.reset()  # advance the RNG
    assert not np.allclose(obs_other, obs_a)
    env.set_rng_state(loaded)
    obs_b, _ = env.reset()
    assert np.array_equal(obs_a, obs_b)
    # also restores into a fresh env built with another seed
    fresh = make_env("reacher-easy", 99, max_episode_steps=20)
    fresh.set_rng_state(loaded)
    assert np.array_equal(fresh.reset()[0], obs_a)


def test_quadruped_escape_needs_no_renderer():
    # Its initialize_episode reads physics.contexts, which would make an OpenGL context (MUJOCO_GL=disable here).
    env = make_env("quadruped-escape", 0, max_episode_steps=4)
    obs, _ = env.reset()
    assert np.all(np.isfinite(obs))
    assert np.all(np.isfinite(env.step(env.action_space.sample())[0]))
    assert env._env.physics._contexts is None


@pytest.mark.slow
def test_every_task_builds_resets_and_steps():
    for task in TASKS:
        env = make_env(task, 0, action_repeat=1, max_episode_steps=2)
        obs, _ = env.reset()
        assert obs.shape == env.observation_space.shape and obs.dtype == np.float32, task
        results = [env.step(np.zeros(env.action_space.shape)) for _ in range(env.episode_length)]
        assert results[-1][2] or results[-1][3], task
        assert all(np.isfinite(r[1]) and r[0].shape == obs.shape for r in results), task
        env.close()


# ----------------------------------------------------------------------------- providers


@pytest.mark.parametrize("task", ["cartpole-swingup", "Pendulum-v1"])
def test_every_provider_keeps_the_env_protocol(task):
    from tdmpc.envs import provider

    env = make_env(task, 3)
    assert task in provider(task).TASKS
    assert env.action_space.low.min() == -1 and env.action_space.high.max() == 1
    assert env.episode_length == -(-env.max_episode_steps // env.action_repeat)
    obs, _ = env.reset(seed=3)
    assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape
    state = env.get_rng_state()
    first = env.reset()[0]
    env.set_rng_state(state)
    np.testing.assert_array_equal(env.reset()[0], first)  # the same episode again
    steps, done = 0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape))
        steps += info["env_steps"]
        done = terminated or truncated
    assert truncated and steps == env.max_episode_steps
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(env.action_space.shape))


def test_unknown_task_lists_every_provider():
    with pytest.raises(UnknownTaskError, match=r"did you mean 'Pendulum-v1'"):
        make_env("Pendulum-v2", 0)
    assert "Pendulum-v1" in TASKS and "cartpole-swingup" in TASKS


@pytest.mark.slow
def test_gymnasium_provider_trains_end_to_end(tmp_path):
    """Pendulum-v1 (gymnasium's own task) through scripts/train.py: seeding, pretraining, evaluation."""
    import csv

    from conftest import run_train_cli, tiny_cli

    run = tmp_path / "run"
    res = run_train_cli(tiny_cli(task="Pendulum-v1", steps=1400, eval_freq=1400, **{"hydra.run.dir": str(run)}),
                        tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = list(csv.DictReader(open(run / "eval.csv")))
    assert [int(r["env_step"]) for r in rows] == [1400]
    assert -16.3 * 200 <= float(rows[0]["return_mean"]) <= 0  # Pendulum's reward per step is in [-16.3, 0]
    from tdmpc.checkpoint import load_checkpoint

    state = load_checkpoint(run / "checkpoint.pt")
    assert state["config"]["task"] == "Pendulum-v1" and state["env_rng"]["bit_generator"] == "PCG64"


def test_a_task_with_unbounded_actuators_is_refused_with_its_reason():
    from conftest import tiny_cfg

    from tdmpc.config import ConfigError

    with pytest.raises(UnknownTaskError, match="task 'lqr-lqr-2-1' is not supported: its actuators are unbounded"):
        make_env("lqr-lqr-2-1", 0)
    with pytest.raises(ConfigError, match=r"task='lqr-lqr-6-2'; allowed: a served task \(its actuators are unbounded"):
        tiny_cfg(task="lqr-lqr-6-2")
