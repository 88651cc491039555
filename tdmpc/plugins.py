"""Your own modules, imported by every process of the suite: ``CA_PRUNE_PLUGINS=my_metrics,my_envs``.

A metric registered with ``pruning.metrics.register`` or an env provider registered with
``tdmpc.envs.register_provider`` in a module of your own is known to the process that imported it. The commands
(``scripts/*.py``), the main job's stages (subprocesses) and SLURM jobs are other processes: naming the module
in this environment variable makes each of them import it, once, when ``tdmpc.envs`` or ``pruning.metrics``
is first imported (and at the start of every command, where a module that cannot be imported is one
``error:`` line with exit code 2). Subprocesses inherit the variable, and so do SLURM jobs under sbatch's
default ``--export=ALL``. Modules are imported by name: put their folder on ``PYTHONPATH`` (or install them).
"""

from __future__ import annotations

import importlib
import os
import sys

#: The environment variable: comma-separated module names.
PLUGINS_ENV = "CA_PRUNE_PLUGINS"

_started: set[str] = set()  # names whose import has begun in this process (a plugin may import its importers)


class PluginError(ImportError):
    """A module named in ``CA_PRUNE_PLUGINS`` cannot be imported; the message is one line."""


def plugin_names() -> list[str]:
    """The module names of ``CA_PRUNE_PLUGINS`` in order (empty entries and spaces ignored)."""
    return [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]


def load_plugins() -> list[str]:
    """Import every module of ``CA_PRUNE_PLUGINS`` not imported yet by this function; returns the names.
    Raises :class:`PluginError` for one that cannot be imported (or raises while importing)."""
    names = plugin_names()
    for name in names:
        if name in _started:
            continue
        _started.add(name)  # first: the plugin's own `import pruning.metrics` calls load_plugins again
        try:
            importlib.import_module(name)
        except PluginError:  # another plugin, imported while this one imports pruning.metrics / tdmpc.envs
            _started.discard(name)
            raise
        except Exception as err:  # ModuleNotFoundError, or whatever the module raised: the user's error
            _started.discard(name)
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise PluginError(f"{PLUGINS_ENV}: cannot import {name!r} ({type(err).__name__}"
                              f"{': ' + first if first else ''}); put its folder on PYTHONPATH") from None
    return names


def load_plugins_or_exit() -> None:
    """:func:`load_plugins` for a command's start: a :class:`PluginError` is one ``error:`` line and exit 2."""
    try:
        load_plugins()
    except PluginError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
