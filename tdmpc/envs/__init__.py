"""Environments: dm_control suite tasks behind the gymnasium API."""

from tdmpc.envs.dm_control import (
    TASKS,
    DMControlEnv,
    UnknownTaskError,
    default_action_repeat,
    make_env,
    parse_task,
)

__all__ = ["TASKS", "DMControlEnv", "UnknownTaskError", "default_action_repeat", "make_env", "parse_task"]
