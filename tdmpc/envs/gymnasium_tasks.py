"""Gymnasium's own continuous-control tasks (``Pendulum-v1``) as an environment provider.

The same wrapper contract as :mod:`tdmpc.envs.dm_control` (see :mod:`tdmpc.envs`): actions in [-1, 1]
rescaled to the task's bounds, float32 observations, action repeat (default 2, TD-MPC2's), a time limit
owned by the wrapper (the gymnasium spec's ``max_episode_steps``: 200 env steps for Pendulum), the env's
numpy Generator as checkpointable plain state.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

#: Gymnasium task ids this provider serves (any continuous Box-action, Box-observation task works).
TASKS: tuple[str, ...] = ("Pendulum-v1",)
DEFAULT_ACTION_REPEAT = 2


def default_action_repeat(task: str) -> int:
    return DEFAULT_ACTION_REPEAT


class GymnasiumEnv(gym.Env):
    """A gymnasium task with action repeat and a time limit (attributes as :class:`DMControlEnv`)."""

    metadata = {"render_modes": []}

    def __init__(self, task: str, seed: int | None, action_repeat: int | None = None,
                 max_episode_steps: int | None = None):
        self._env = gym.make(task).unwrapped  # the time limit is ours
        self.task_name = task
        self.action_repeat = DEFAULT_ACTION_REPEAT if action_repeat is None else int(action_repeat)
        if self.action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        limit = max_episode_steps or gym.spec(task).max_episode_steps or 1000
        self.max_episode_steps = int(limit)
        self.episode_length = -(-self.max_episode_steps // self.action_repeat)
        space = self._env.action_space
        self.action_low, self.action_high = space.low.astype(np.float64), space.high.astype(np.float64)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, self._env.observation_space.shape, np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, space.shape, np.float32)
        self._t, self._needs_reset = 0, True
        self._env.reset(seed=seed)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        obs, _ = self._env.reset(seed=seed)
        self._t, self._needs_reset = 0, False
        return np.asarray(obs, dtype=np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._needs_reset:
            raise RuntimeError("call reset() before step(), and after an episode has ended")
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(self.action_space.shape), -1.0, 1.0)
        scaled = (self.action_low + (action + 1.0) * 0.5 * (self.action_high - self.action_low)).astype(np.float32)
        reward, n, terminated = 0.0, 0, False
        for _ in range(min(self.action_repeat, self.max_episode_steps - self._t)):
            obs, r, terminated, _, _ = self._env.step(scaled)
            self._t += 1
            n += 1
            reward += float(r)
            if terminated:
                break
        truncated = not terminated and self._t >= self.max_episode_steps
        self._needs_reset = terminated or truncated
        return np.asarray(obs, dtype=np.float32), reward, bool(terminated), truncated, {"env_steps": n}

    def get_rng_state(self) -> dict:
        """The env's numpy Generator state (plain python values)."""
        return dict(self._env.np_random.bit_generator.state)

    def set_rng_state(self, state: dict) -> None:
        self._env.np_random.bit_generator.state = dict(state)

    def close(self) -> None:
        self._env.close()


def make_env(task: str, seed: int, action_repeat: int | None = None, max_episode_steps: int | None = None) -> GymnasiumEnv:
    return GymnasiumEnv(task, seed, action_repeat, max_episode_steps)
