"""dm_control suite tasks as state-based ``gymnasium.Env``s.

Task names are ``domain-task`` with underscores turned into dashes and ``ball_in_cup`` called ``cup``
(``cartpole-swingup``, ``cup-catch``, ``point-mass-easy``, ``finger-turn-hard`` ...), as in the TD-MPC
papers. Observations are the suite's state dict flattened to one float32 vector; actions live in
[-1, 1] and are rescaled to the task's action bounds.

Action repeat: the TD-MPC defaults (Hansen et al. 2022) are used, 8 for cartpole, 2 for walker and
finger, 4 otherwise; TD-MPC2 uses a uniform 2 (pass ``action_repeat=2``). We keep TD-MPC's per-task
values because they make 100k-env-step runs cheap on a CPU (fewer planning calls per env step).
"""

from __future__ import annotations

import difflib

import gymnasium as gym
import numpy as np
from dm_control import suite


def _name(domain: str, task: str) -> str:
    domain = "cup" if domain == "ball_in_cup" else domain
    return f"{domain}-{task}".replace("_", "-")


_TASK_TO_SUITE: dict[str, tuple[str, str]] = {_name(d, t): (d, t) for d, t in suite.ALL_TASKS}
TASKS: tuple[str, ...] = tuple(sorted(_TASK_TO_SUITE))


class UnknownTaskError(ValueError):
    """An unknown task name; the message lists the valid ones."""


def parse_task(task: str) -> tuple[str, str]:
    """``'cup-catch'`` -> ``('ball_in_cup', 'catch')``; raises :class:`UnknownTaskError`."""
    if task not in _TASK_TO_SUITE:
        close = difflib.get_close_matches(str(task), TASKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownTaskError(f"unknown task {task!r}{hint}; valid tasks: {', '.join(TASKS)}")
    return _TASK_TO_SUITE[task]


def default_action_repeat(task: str) -> int:
    """TD-MPC's per-task action repeat: 8 for cartpole, 2 for walker and finger, 4 otherwise."""
    domain = parse_task(task)[0]
    if domain == "cartpole":
        return 8
    if domain in ("walker", "finger"):
        return 2
    return 4


class DMControlEnv(gym.Env):
    """A dm_control suite task with action repeat and a time limit, behind the gymnasium API."""

    metadata = {"render_modes": []}

    def __init__(self, task: str, seed: int, action_repeat: int | None = None, max_episode_steps: int = 1000):
        domain, task_name = parse_task(task)
        self.task_name = task
        self.action_repeat = int(action_repeat or default_action_repeat(task))
        if self.action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        self.max_episode_steps = int(max_episode_steps)
        self.episode_length = -(-self.max_episode_steps // self.action_repeat)  # ceil: agent steps
        self._env = suite.load(domain, task_name, task_kwargs={"random": seed})
        spec = self._env.action_spec()
        self._act_low = spec.minimum.astype(np.float64)
        self._act_high = spec.maximum.astype(np.float64)
        obs_dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, spec.shape, np.float32)
        self._t = 0

    @staticmethod
    def _flatten(observation) -> np.ndarray:
        return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in observation.values()])

    @property
    def _random(self) -> np.random.RandomState:
        return self._env.task.random

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._random.seed(seed)
        self._t = 0
        return self._flatten(self._env.reset().observation), {}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        scaled = self._act_low + (action + 1.0) * 0.5 * (self._act_high - self._act_low)
        reward, terminated, n = 0.0, False, 0
        for _ in range(self.action_repeat):
            if self._t >= self.max_episode_steps:
                break
            ts = self._env.step(scaled)
            self._t += 1
            n += 1
            reward += ts.reward or 0.0
            if ts.last():
                terminated = ts.discount == 0.0
                break
        truncated = not terminated and (self._t >= self.max_episode_steps or ts.last())
        return self._flatten(ts.observation), float(reward), bool(terminated), bool(truncated), {"env_steps": n}

    def get_rng_state(self) -> dict:
        """The task's RandomState, as plain python values (``torch.load(weights_only=True)``-safe)."""
        kind, keys, pos, has_gauss, cached = self._random.get_state()
        return {"kind": kind, "keys": [int(k) for k in keys], "pos": int(pos),
                "has_gauss": int(has_gauss), "cached": float(cached)}

    def set_rng_state(self, state: dict) -> None:
        self._random.set_state(
            (state["kind"], np.asarray(state["keys"], dtype=np.uint32), state["pos"], state["has_gauss"], state["cached"])
        )

    def close(self) -> None:
        self._env.close()


def make_env(task: str, seed: int, action_repeat: int | None = None, max_episode_steps: int = 1000) -> DMControlEnv:
    """Build the state-based gymnasium env of a dm_control suite task (see module docstring)."""
    return DMControlEnv(task, seed, action_repeat, max_episode_steps)
