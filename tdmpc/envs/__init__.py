"""Environments, behind one small registry of providers.

A **provider** is one module of this package that defines

- ``TASKS``: the task names it serves (a tuple of str);
- ``make_env(task, seed, action_repeat=None, max_episode_steps=None)``: the env of a task;
- ``default_action_repeat(task)``: the action repeat used when the config says ``null``.

Every module here that defines all three is a provider (found at import), so adding one, e.g. gymnasium's
MuJoCo tasks, is one file. Task names must be unique across providers. Built in:
:mod:`~tdmpc.envs.dm_control` (the dm_control suite, ``cartpole-swingup`` ...) and
:mod:`~tdmpc.envs.gymnasium_tasks` (``Pendulum-v1``).

**The env protocol** (what :class:`tdmpc.trainer.Trainer` needs from an env): a ``gymnasium.Env`` with

- a ``Box`` ``observation_space`` of float32 vectors and a ``Box`` ``action_space`` in [-1, 1] (the env
  rescales to its own bounds);
- ``reset(seed=None) -> (obs, info)``: a ``seed`` reseeds the env's randomness, ``None`` continues it;
  ``step(action) -> (obs, reward, terminated, truncated, info)`` applying the action ``action_repeat``
  times (rewards summed), with ``info["env_steps"]`` = the env steps taken; stepping after the end of an
  episode raises;
- attributes ``action_repeat``, ``max_episode_steps`` (env steps per episode; the env owns the time limit
  and reports it as ``truncated``) and ``episode_length`` (agent steps per episode,
  ``ceil(max_episode_steps / action_repeat)``: it sets TD-MPC2's heuristic discount); optionally
  ``action_low`` / ``action_high``, the env's own action bounds that [-1, 1] is mapped onto (recorded by the
  export for ``Controller.to_bounds``; absent: [-1, 1]);
- ``get_rng_state() -> dict`` of plain python values (saved in checkpoints, loaded with
  ``weights_only=True``) and ``set_rng_state(state)``, so that a resumed run replays the same episodes.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from types import ModuleType

from tdmpc.envs.dm_control import UNSUPPORTED, DMControlEnv, UnknownTaskError, parse_task
from tdmpc.plugins import load_plugins


def _providers() -> tuple[ModuleType, ...]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if all(hasattr(module, a) for a in ("TASKS", "make_env", "default_action_repeat")):
            found.append(module)
    return tuple(found)


PROVIDERS = _providers()
_BY_TASK = {task: p for p in PROVIDERS for task in p.TASKS}
assert len(_BY_TASK) == sum(len(p.TASKS) for p in PROVIDERS), "a task name is served by two providers"
TASKS: tuple[str, ...] = tuple(_BY_TASK)
"""Every task of every provider."""


def register_provider(p) -> None:
    """Add a provider defined elsewhere (any object with ``TASKS``, ``make_env``, ``default_action_repeat``)."""
    global PROVIDERS, TASKS
    if not all(hasattr(p, a) for a in ("TASKS", "make_env", "default_action_repeat")):
        raise TypeError(f"{p!r} is not an environment provider (needs TASKS, make_env, default_action_repeat)")
    taken = [t for t in p.TASKS if t in _BY_TASK and _BY_TASK[t] is not p]
    if taken:
        raise ValueError(f"tasks {taken} are already served by another provider")
    if p not in PROVIDERS:
        PROVIDERS = (*PROVIDERS, p)
    _BY_TASK.update({t: p for t in p.TASKS})
    TASKS = tuple(_BY_TASK)


def provider(task: str) -> ModuleType:
    """The provider serving ``task``; raises :class:`UnknownTaskError` with the valid names and a suggestion."""
    if task not in _BY_TASK and task in UNSUPPORTED:
        raise UnknownTaskError(f"task {task!r} is not supported: {UNSUPPORTED[task]}")
    if task not in _BY_TASK:
        close = difflib.get_close_matches(str(task), TASKS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownTaskError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}{hint}")
    return _BY_TASK[task]


def make_env(task: str, seed: int, action_repeat: int | None = None, max_episode_steps: int | None = None):
    """The env of ``task`` from its provider (``max_episode_steps=None``: the provider's default)."""
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    return provider(task).make_env(task, seed, action_repeat, **kwargs)


def default_action_repeat(task: str) -> int:
    return provider(task).default_action_repeat(task)


__all__ = ["PROVIDERS", "TASKS", "DMControlEnv", "UnknownTaskError", "default_action_repeat", "make_env",
           "parse_task", "provider", "register_provider"]


# The user's own provider modules named in CA_PRUNE_PLUGINS (tdmpc/plugins.py), in every process.
load_plugins()
