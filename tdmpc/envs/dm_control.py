"""dm_control suite tasks as state-based ``gymnasium.Env``s.

Task names are ``domain-task`` with underscores turned into dashes and ``ball_in_cup`` called ``cup``
(``cartpole-swingup``, ``cup-catch``, ``point-mass-easy``, ``finger-turn-hard`` ...), as in the TD-MPC
papers. Observations are the suite's state dict flattened to one float32 vector (entries concatenated in
the dict's order); actions live in [-1, 1] and are clipped, then rescaled linearly to the task's bounds.

Action repeat: the TD-MPC defaults (Hansen et al. 2022) are used, 8 for cartpole, 2 for walker and
finger, 4 otherwise; TD-MPC2 uses a uniform 2 (pass ``action_repeat=2``). We keep TD-MPC's per-task
values because they make 100k-env-step runs cheap on a CPU (fewer planning calls per env step).

Served: every suite task except the ``lqr`` domain (:data:`UNSUPPORTED`): its actuators are unbounded (the
suite reports bounds of ±1e10), so an action in [-1, 1] rescaled onto them would be a control of billions.

Time limit: an episode is ``max_episode_steps`` *environment* steps (1000 by default, dm_control's own
limit for the suite tasks), i.e. ``ceil(max_episode_steps /
action_repeat)`` agent steps. The wrapper owns the limit: dm_control's time limit is switched off so
that any ``max_episode_steps`` is honoured exactly. Reaching it gives ``truncated=True``; a dm_control
termination (a last step with discount 0) gives ``terminated=True``.
"""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium as gym
import numpy as np
from dm_control import mujoco, suite


def _name(domain: str, task: str) -> str:
    """Our name of a suite task: ``('ball_in_cup', 'catch')`` -> ``'cup-catch'``."""
    domain = "cup" if domain == "ball_in_cup" else domain
    return f"{domain}-{task}".replace("_", "-")


#: Suite domains not served, and why (see the module doc).
UNSUPPORTED_DOMAINS = {"lqr": "its actuators are unbounded (bounds ±1e10): an action in [-1, 1] would be "
                              "rescaled to a control of billions"}
_TASK_TO_SUITE: dict[str, tuple[str, str]] = {_name(d, t): (d, t) for d, t in suite.ALL_TASKS
                                              if d not in UNSUPPORTED_DOMAINS}
#: Suite tasks not served, by our name: why.
UNSUPPORTED: dict[str, str] = {_name(d, t): UNSUPPORTED_DOMAINS[d] for d, t in suite.ALL_TASKS
                               if d in UNSUPPORTED_DOMAINS}
assert len(_TASK_TO_SUITE) + len(UNSUPPORTED) == len(suite.ALL_TASKS), "two suite tasks map to the same name"

TASKS: tuple[str, ...] = tuple(sorted(_TASK_TO_SUITE))
"""Every dm_control suite task served (all but :data:`UNSUPPORTED`), by our name, sorted."""


_NO_RENDER_PHYSICS: dict[type, type] = {}


def _existing_contexts(physics: mujoco.Physics) -> Any:
    """The physics' rendering contexts if some were made, else ``None``; never makes new ones."""
    return physics._contexts


def _disable_rendering_contexts(physics: mujoco.Physics) -> None:
    """Stop ``physics.contexts`` from creating an OpenGL context.

    ``Physics.contexts`` makes a GL context on first access, and ``quadruped-escape`` reads it in
    ``initialize_episode`` (to re-upload its random heightfield for rendering). That fails without an
    OpenGL backend (``MUJOCO_GL=disable``, headless machines) and is wasted work otherwise: these envs are
    state-based. The instance gets a subclass of its own class whose ``contexts`` is ``None`` (the
    heightfield used by the simulation is ``model.hfield_data``, written before the upload).
    """
    cls = type(physics)
    if cls not in _NO_RENDER_PHYSICS:
        _NO_RENDER_PHYSICS[cls] = type(cls.__name__, (cls,), {"contexts": property(_existing_contexts)})
    physics.__class__ = _NO_RENDER_PHYSICS[cls]


class UnknownTaskError(ValueError):
    """An unknown task name; the message lists the valid ones and suggests a close match."""


def parse_task(task: str) -> tuple[str, str]:
    """``'cup-catch'`` -> ``('ball_in_cup', 'catch')``; raises :class:`UnknownTaskError`."""
    if task not in _TASK_TO_SUITE:
        close = difflib.get_close_matches(str(task), TASKS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownTaskError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}{hint}")
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
    """A dm_control suite task with action repeat and a time limit, behind the gymnasium API.

    Attributes:
        task_name: our name of the task (``'cartpole-swingup'``).
        action_repeat: env steps per agent step.
        max_episode_steps: env steps per episode.
        episode_length: agent steps per episode, ``ceil(max_episode_steps / action_repeat)``.
    """

    metadata = {"render_modes": []}

    def __init__(self, task: str, seed: int | None, action_repeat: int | None = None, max_episode_steps: int = 1000):
        domain, suite_task = parse_task(task)
        self.task_name = task
        self.action_repeat = default_action_repeat(task) if action_repeat is None else int(action_repeat)
        if self.action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        self.max_episode_steps = int(max_episode_steps)
        if self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.episode_length = -(-self.max_episode_steps // self.action_repeat)  # ceil division
        self._env = suite.load(
            domain,
            suite_task,
            task_kwargs={"random": seed, "time_limit": float("inf")},  # the wrapper enforces the limit
            environment_kwargs={"flat_observation": False},
        )
        _disable_rendering_contexts(self._env.physics)
        spec = self._env.action_spec()
        self.action_low = np.asarray(spec.minimum, dtype=np.float64)
        self.action_high = np.asarray(spec.maximum, dtype=np.float64)
        obs_dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, tuple(spec.shape), np.float32)
        self._t = 0  # env steps taken this episode
        self._needs_reset = True

    @staticmethod
    def _flatten(observation: dict[str, Any]) -> np.ndarray:
        """Concatenate the observation dict's entries, in order, into one float32 vector."""
        return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in observation.values()])

    @property
    def _random(self) -> np.random.RandomState:
        """The task's RandomState: it drives all the randomness of dm_control's episode initialisation."""
        return self._env.task.random

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode; a ``seed`` reseeds the task's RandomState. ``options`` is ignored."""
        super().reset(seed=seed)
        if seed is not None:
            self._random.seed(seed)
        self._t = 0
        self._needs_reset = False
        return self._flatten(self._env.reset().observation), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Apply ``action`` ``action_repeat`` times (fewer at the end of an episode); rewards are summed."""
        if self._needs_reset:
            # dm_control would silently start a new episode and ignore the action.
            raise RuntimeError("call reset() before step(), and after an episode has ended")
        action = np.asarray(action, dtype=np.float64).reshape(self.action_space.shape)
        action = np.clip(action, -1.0, 1.0)
        scaled = self.action_low + (action + 1.0) * 0.5 * (self.action_high - self.action_low)
        reward, n_steps = 0.0, 0
        for _ in range(min(self.action_repeat, self.max_episode_steps - self._t)):
            ts = self._env.step(scaled)
            self._t += 1
            n_steps += 1
            reward += float(ts.reward or 0.0)
            if ts.last():
                break
        terminated = bool(ts.last() and ts.discount == 0.0)
        truncated = not terminated and (ts.last() or self._t >= self.max_episode_steps)
        self._needs_reset = terminated or truncated
        return self._flatten(ts.observation), reward, terminated, truncated, {"env_steps": n_steps}

    def get_rng_state(self) -> dict:
        """The task's RandomState as plain python values (safe for ``torch.load(weights_only=True)``)."""
        kind, keys, pos, has_gauss, cached_gaussian = self._random.get_state()
        return {
            "kind": str(kind),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached_gaussian),
        }

    def set_rng_state(self, state: dict) -> None:
        """Restore a state from :meth:`get_rng_state`; the next ``reset()`` then repeats the captured one."""
        self._random.set_state(
            (
                state["kind"],
                np.asarray(state["keys"], dtype=np.uint32),
                int(state["pos"]),
                int(state["has_gauss"]),
                float(state["cached"]),
            )
        )

    def close(self) -> None:
        """Release the dm_control environment."""
        self._env.close()


def make_env(task: str, seed: int, action_repeat: int | None = None, max_episode_steps: int = 1000) -> DMControlEnv:
    """Build the state-based gymnasium env of a dm_control suite task (see the module docstring).

    ``action_repeat=None`` picks :func:`default_action_repeat`; an unknown ``task`` raises
    :class:`UnknownTaskError`.
    """
    return DMControlEnv(task, seed, action_repeat, max_episode_steps)
