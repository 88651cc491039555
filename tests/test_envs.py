import numpy as np
import pytest
import torch
from dm_control import suite
from gymnasium.utils.env_checker import check_env

from tdmpc.envs import TASKS, UnknownTaskError, default_action_repeat, make_env


def test_task_names_cover_the_suite():
    for name in ("cartpole-swingup", "cheetah-run", "walker-walk", "reacher-easy", "finger-spin", "cup-catch",
                 "point-mass-easy", "finger-turn-hard"):
        assert name in TASKS
    assert len(TASKS) == len(suite.ALL_TASKS) == len(set(TASKS))


def test_unknown_task_lists_valid_names_and_suggests():
    with pytest.raises(UnknownTaskError) as err:
        make_env("cartpole-swingupp", 0)
    msg = str(err.value)
    assert "did you mean 'cartpole-swingup'" in msg and "walker-walk" in msg and "cup-catch" in msg


def test_gymnasium_env_checker_passes():
    check_env(make_env("cartpole-swingup", 0), skip_render_check=True)


def test_spaces_and_clipping():
    env = make_env("walker-walk", 0)
    obs, info = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape == (24,) and obs.dtype == np.float32
    assert env.action_space.shape == (6,)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    obs, r, term, trunc, info = env.step(np.full(6, 5.0))  # out of bounds: clipped, no error
    assert obs.dtype == np.float32 and info["env_steps"] == 2 and not term and not trunc


def test_action_repeat_sums_rewards_like_raw_env():
    env = make_env("cartpole-swingup", 3, action_repeat=4)
    raw = suite.load("cartpole", "swingup", task_kwargs={"random": 3})
    obs, _ = env.reset()
    ts = raw.reset()
    assert np.allclose(obs, np.concatenate([v.ravel() for v in ts.observation.values()]))
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.uniform(-1, 1, size=1).astype(np.float32)
        obs, r, *_ = env.step(a)
        total = 0.0
        for _ in range(4):
            ts = raw.step(a.astype(np.float64))
            total += ts.reward
        assert r == pytest.approx(total, abs=1e-9)
        assert np.allclose(obs, np.concatenate([v.ravel() for v in ts.observation.values()]).astype(np.float32))


def test_episode_length_and_truncation():
    env = make_env("cartpole-swingup", 0)
    assert env.action_repeat == 8 and env.episode_length == 125
    env.reset()
    n, done = 0, False
    while not done:
        _, _, term, trunc, _ = env.step(np.zeros(1))
        n, done = n + 1, term or trunc
        assert not term
    assert n == 125 and trunc
    short = make_env("cartpole-swingup", 0, action_repeat=3, max_episode_steps=10)
    short.reset()
    infos = [short.step(np.zeros(1)) for _ in range(4)]
    assert [i[4]["env_steps"] for i in infos] == [3, 3, 3, 1]
    assert [i[3] for i in infos] == [False, False, False, True]
    assert short.episode_length == 4


def test_default_action_repeat():
    assert default_action_repeat("cartpole-balance") == 8
    assert default_action_repeat("walker-run") == 2
    assert default_action_repeat("finger-spin") == 2
    assert default_action_repeat("cheetah-run") == 4
    assert default_action_repeat("cup-catch") == 4


def _rollout(env, actions):
    obs, _ = env.reset()
    out = [obs]
    for a in actions:
        out.append(env.step(a)[0])
    return np.stack(out)


def test_seeding_is_deterministic():
    actions = np.random.default_rng(1).uniform(-1, 1, size=(10, 2))
    a = _rollout(make_env("reacher-easy", 5), actions)
    b = _rollout(make_env("reacher-easy", 5), actions)
    c = _rollout(make_env("reacher-easy", 6), actions)
    assert np.array_equal(a, b)
    assert not np.allclose(a[0], c[0])
    env = make_env("reacher-easy", 5)
    o1, _ = env.reset(seed=11)
    o2, _ = env.reset(seed=11)
    assert np.array_equal(o1, o2)


def test_rng_state_round_trip_through_torch_save(tmp_path):
    env = make_env("reacher-easy", 2)
    env.reset()
    state = env.get_rng_state()
    obs_a, _ = env.reset()
    torch.save({"env": state}, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)["env"]
    env.reset()  # advance the RNG
    env.set_rng_state(loaded)
    obs_b, _ = env.reset()
    assert np.array_equal(obs_a, obs_b)
