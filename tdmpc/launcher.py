"""Checks of Hydra launcher presets (``conf/hydra/launcher/*.yaml``) for the keys a sweep needs.

Why a check of the preset *file* and not of the composed config: hydra-submitit-launcher's schema
(``SlurmQueueConf``) gives every key a default (``timeout_min: 60``, ``array_parallelism: 256``,
``mem_gb: null`` ...), so a preset that forgets a key still composes and silently submits with the
schema default; only the preset file tells that the key was never chosen. Keys inherited from another
preset of the same folder (``defaults: [slurm]``) count as present.

- :func:`validate_launcher` checks one file (``scripts/slurm/validate_launcher.py`` is its command line);
- :class:`LauncherPresetCheck`, a Hydra callback of ``conf/train.yaml`` and ``conf/prune.yaml``, checks the
  preset a multirun was started with (``hydra/launcher=NAME``, found in the config search path) before
  anything is submitted or written, and exits 2 with one line naming the file and the key.
- :class:`FailedJobsCallback`, a Hydra callback of ``conf/train.yaml`` and ``conf/prune.yaml``: after a
  multirun in which some job failed (``tdmpc.cli.record_failure`` records it instead of stopping the sweep),
  lists those jobs and exits 1.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

#: Keys every preset must set, per submitit executor (``defaults: [submitit_slurm|submitit_local]``).
REQUIRED = {
    "submitit_slurm": ("partition", "timeout_min", "cpus_per_task", "gpus_per_node", "mem_gb", "array_parallelism"),
    "submitit_local": ("timeout_min", "cpus_per_task", "gpus_per_node", "mem_gb"),
}
#: Keys that may be null (null: the cluster's default).
NULLABLE = ("partition", "account")
#: Smallest allowed value of the integer keys.
MINIMUM = {"timeout_min": 1, "cpus_per_task": 1, "gpus_per_node": 0, "mem_gb": 1, "array_parallelism": 1}


class LauncherError(ValueError):
    """A launcher preset lacks a required key or has a bad value; the message is one line."""


def _load(path: Path, seen: tuple[Path, ...] = ()) -> tuple[str | None, dict]:
    """(executor, keys) of a preset, following ``defaults`` to sibling presets (later entries win)."""
    import yaml

    if path in seen:
        raise LauncherError(f"{path}: defaults form a cycle ({' -> '.join(p.name for p in (*seen, path))})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise LauncherError(f"{path}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise LauncherError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise LauncherError(f"{path}: expected a mapping of launcher keys, got {type(data).__name__}")
    executor, keys = None, {}
    for entry in data.pop("defaults", None) or []:
        name = entry if isinstance(entry, str) else None
        if name in REQUIRED:
            executor = name
        elif name and name != "_self_" and (path.parent / f"{name}.yaml").is_file():
            executor, inherited = _load(path.parent / f"{name}.yaml", (*seen, path))
            keys.update(inherited)
    keys.update(data)
    return executor, keys


def validate_launcher(path: str | Path) -> dict:
    """Return the preset's keys; raise :class:`LauncherError` (one line naming file, key, allowed)."""
    path = Path(path)
    executor, keys = _load(path)
    if executor is None:
        raise LauncherError(f"{path}: defaults must include one of {', '.join(REQUIRED)} (or a preset that does)")
    missing = [k for k in REQUIRED[executor] if k not in keys]
    if missing:
        raise LauncherError(f"{path}: missing required key(s) {', '.join(missing)} for {executor}; "
                            f"required: {', '.join(REQUIRED[executor])}")
    for key in REQUIRED[executor]:
        value = keys[key]
        if value is None and key in NULLABLE:
            continue
        if key in MINIMUM:
            if isinstance(value, bool) or not isinstance(value, int) or value < MINIMUM[key]:
                raise LauncherError(f"{path}: {key}={value!r}; allowed: an integer >= {MINIMUM[key]}")
        elif not isinstance(value, str) or not value or value == "???":
            raise LauncherError(f"{path}: {key}={value!r}; allowed: a name, or null for the cluster's default")
    return keys


def preset_file(config: DictConfig) -> Path | None:
    """The YAML file of the launcher preset chosen in a composed config (``hydra/launcher=NAME``), when
    it comes from a config directory (``file://`` source); ``None`` for Hydra's own or the plugin's
    launchers (``basic``, ``submitit_slurm``, ...), which are structured configs."""
    hydra_cfg = config.get("hydra") if isinstance(config, DictConfig) else None
    if hydra_cfg is None:
        return None
    name = hydra_cfg.runtime.choices.get("hydra/launcher")
    if not name:
        return None
    for source in hydra_cfg.runtime.config_sources:
        if source.get("schema") == "file":
            path = Path(str(source.path)) / "hydra" / "launcher" / f"{name}.yaml"
            if path.is_file():
                return path
    return None


class LauncherPresetCheck(Callback):
    """At the start of a multirun: validate the launcher preset file; one line and exit 2 if it is bad."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        path = preset_file(config)
        if path is None:
            return
        try:
            validate_launcher(path)
        except LauncherError as err:
            print(f"error: invalid launcher preset hydra/launcher={path.stem}: {err}", file=sys.stderr, flush=True)
            sys.exit(2)


class FailedJobsCallback(Callback):
    """Exit 1 after a multirun in which some job failed, listing them: the markers failed jobs wrote below the
    sweep dir (``.failed_jobs/*.json``, :func:`tdmpc.cli.record_failure`; they name run dirs anywhere) and any
    ``error.json`` written below the sweep dir during the sweep."""

    def __init__(self, error_file: str = "error.json") -> None:
        self.error_file = error_file
        self.start = time.time()
        self.before: dict[Path, float] | None = None  # failure files at the sweep's start and their mtimes

    def _files(self, sweep_dir: Path) -> list[Path]:
        from tdmpc.cli import FAILED_JOBS_DIR

        return [*sweep_dir.glob(f"{FAILED_JOBS_DIR}/*.json"), *sweep_dir.rglob(self.error_file)]

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Note the failure files the sweep dir already holds (an earlier sweep's), with their mtimes: a file of
        this sweep is one that is new or was rewritten since. No clock is compared (a compute node's or a file
        server's clock behind this machine's by over a second used to drop failures, and the sweep exited 0)."""
        self.start = time.time() - 1.0
        sweep_dir = Path(str(config.hydra.sweep.dir))
        self.before = {}
        for path in self._files(sweep_dir) if sweep_dir.is_dir() else []:
            try:
                self.before[path] = path.stat().st_mtime
            except OSError:
                continue

    def _this_sweeps(self, path: Path) -> bool:
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return False
        if self.before is None:  # on_multirun_start did not run: by this machine's clock
            return mtime >= self.start
        return path not in self.before or mtime != self.before[path]

    def failures(self, sweep_dir: Path) -> dict[str, str]:
        """``{run dir: "error: message"}`` of the jobs of this sweep that failed (see the class doc)."""
        out: dict[str, str] = {}
        for path in sorted(p for p in self._files(sweep_dir) if self._this_sweeps(p)):
            try:
                info = json.loads(path.read_text())
                run_dir = str(info.get("run_dir") or path.parent)
                msg = f"{info.get('error')}: {info.get('message')}"
            except (OSError, ValueError, AttributeError):
                run_dir, msg = str(path.parent), f"unreadable {path.name}"
            out.setdefault(run_dir, msg)
        return out

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed = self.failures(Path(str(config.hydra.sweep.dir)))
        if not failed:
            return
        print(f"error: {len(failed)} job(s) of the sweep failed (the others completed):", file=sys.stderr)
        for run_dir, msg in failed.items():
            print(f"  {run_dir}: {msg}", file=sys.stderr)
        sys.stderr.flush()
        sys.exit(1)
