"""Glue between Hydra apps and the trainer: validation with one-line user errors, run-dir files.

A training command changes nothing in its run dir before it is known to be valid and compatible with what
the dir holds: the config is validated, the dir is claimed (:mod:`tdmpc.run_dir`: ``run.json`` manifest,
``run.lock``; a resume with other :data:`~tdmpc.config.FIXED_ON_RESUME` settings is refused naming them),
the checkpoint is loaded, and only then are ``config.yaml``, Hydra's ``.hydra/`` (``conf/train.yaml`` sets
``hydra.output_subdir: null``, so Hydra does not write it before the app runs) and the CSV files written.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tdmpc.checkpoint import CheckpointError, load_checkpoint
from tdmpc.config import ConfigError, TrainConfig, fixed_settings, to_dataclass, validate, with_task_defaults
from tdmpc.run_dir import RunDirError, claim, identity, remove_if_unused, requeued_into, settings_diff
from tdmpc.trainer import TrainingInterrupted  # at import: the commands import this module before they start

#: Errors of the user's making: one line, exit code 2 (or an ``error.json`` in a multirun).
USER_ERRORS = (ConfigError, CheckpointError, RunDirError)
ERROR_FILE = "error.json"  # a failed job's record in a multirun (as the prune sweep writes it)
HYDRA_SUBDIR = ".hydra"

OnTrainer = Callable[[Any, Any], None]


def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit (no traceback for user errors)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def remove_refused_run_dir(run_dir: Path | None) -> None:
    """A refused command leaves no empty run dir behind (Hydra creates it before the app runs)."""
    try:
        remove_if_unused(run_dir if run_dir is not None else hydra_run_dir())
    except ValueError:  # no Hydra run (the app called directly) and no run dir yet
        pass


def hydra_run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_train(cfg: DictConfig, on_trainer: OnTrainer | None = None,
              make_on_trainer: Callable[[], OnTrainer | None] | None = None,
              section_defaults: dict | None = None) -> float | None:
    """Validate ``cfg``, claim the run dir, write ``config.yaml``, train; returns the final eval return.

    ``on_trainer(trainer, train_cfg)`` is called once the :class:`~tdmpc.trainer.Trainer` is built and
    before training starts: the extension point for other packages to add ``update_hooks`` and
    ``checkpoint_extras`` (e.g. an importance tracker) without this module knowing about them.
    ``make_on_trainer()`` builds it after the config is validated and before the run dir is claimed (it
    may raise :class:`ConfigError` for its own settings).

    User errors exit 2 with one line; SIGINT/SIGTERM print ``interrupted at env step N; ...`` and exit
    130/143. In a multirun, a failing job writes ``error.json`` into its run dir and returns ``None`` so
    the other jobs go on (:class:`tdmpc.launcher.FailedJobsCallback` exits 1 at the end).
    """
    run_dir: Path | None = None
    try:
        tcfg = validate(to_dataclass(cfg))
        run_dir = Path(tcfg.run_dir) if tcfg.run_dir else hydra_run_dir()
        if make_on_trainer is not None:
            on_trainer = make_on_trainer()
        return _train(cfg, tcfg, run_dir, on_trainer, section_defaults)
    except TrainingInterrupted as err:
        print(str(err), file=sys.stderr, flush=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted before training started; re-run the same command to start it", file=sys.stderr,
              flush=True)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - a failing job of a multirun must not stop the others
        if not in_multirun():
            if isinstance(err, USER_ERRORS):
                remove_refused_run_dir(run_dir)
                fail(str(err))
            raise
        path = record_failure(run_dir if run_dir is not None else hydra_run_dir(), err)
        print(f"error: {err} (job failed, recorded in {path})", file=sys.stderr, flush=True)
        return None


def _train(cfg: DictConfig, tcfg: TrainConfig, run_dir: Path, on_trainer: OnTrainer | None,
           section_defaults: dict | None = None) -> float | None:
    from tdmpc.trainer import Trainer

    if (not tcfg.resume or tcfg.overwrite) and requeued_into(run_dir):
        # SLURM re-runs a requeued job's command as it was: resume=false / overwrite=true meant its first start
        print(f"[run] this SLURM job was requeued: it continues its own run in {run_dir} (resume=true, "
              f"overwrite=false for this restart)", flush=True)
        tcfg = dataclasses.replace(tcfg, resume=True, overwrite=False)
    config_dict = OmegaConf.to_container(OmegaConf.structured(tcfg))
    settings = fixed_settings(config_dict)  # as the command says them (null: the task's default)
    with claim_train_dir(run_dir, tcfg, settings, section_defaults) as owned:
        if owned.moved_to is not None:
            _reopen_log_files(run_dir)
            print(f"[run] moved the old run aside to {owned.moved_to} (overwrite=true)", flush=True)
        try:
            trainer = Trainer(tcfg, run_dir, config_dict=config_dict)
            if on_trainer is not None:
                on_trainer(trainer, tcfg)
            trainer.restore()  # a checkpoint that does not fit fails here, before any file is written
        except BaseException as err:
            owned.withdraw(err)
            raise
        # resolved: presets and the task's defaults (action_repeat, seed_steps) as the trainer uses them
        OmegaConf.save(OmegaConf.create(trainer.config_dict), run_dir / "config.yaml")
        save_hydra_config(cfg, run_dir)
        summary = trainer.train()
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    return summary.get("eval/return_mean")


def claim_train_dir(run_dir: Path, tcfg: TrainConfig, settings: dict, section_defaults: dict | None = None):
    """:func:`tdmpc.run_dir.claim` for a training run (see :func:`run_train`). A setting the run's record
    lacks compares as its default: :class:`TrainConfig`'s, or ``section_defaults[section]`` for a section
    another package fills (e.g. ``pruning``)."""
    if tcfg.resume:
        hint = "use another run dir (hydra.run.dir=...), or add overwrite=true to move the old run aside"
    else:
        hint = "re-run with resume=true to continue it, or add overwrite=true to move it aside and start anew"
    defaults = {**fixed_settings(OmegaConf.to_container(OmegaConf.structured(TrainConfig()))),
                **(section_defaults or {})}
    return claim(run_dir, "train", identity(settings), settings=settings, fresh=not tcfg.resume,
                 overwrite=tcfg.overwrite, hint=hint, defaults=defaults,
                 check_unowned=lambda d: _check_unowned(d, settings) if tcfg.resume else None)


def _check_unowned(run_dir: Path, settings: dict) -> str | None:
    """A run dir without ``run.json`` (written before manifests existed): adopt it if its checkpoint
    holds a training run with the same fixed settings (or it has no checkpoint)."""
    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        return None
    saved = load_checkpoint(path).get("config")
    if not isinstance(saved, dict):
        return f"{path} holds no training config"
    if "prune" in saved:
        return f"{path} is a prune job's checkpoint, not a training run's"
    old = with_task_defaults(fixed_settings(saved))  # null (older runs) and resolved values compare equal
    diff = settings_diff(old, with_task_defaults({k: settings.get(k) for k in old}))
    return "settings that cannot change differ from its checkpoint's: " + ", ".join(diff) if diff else None


def save_hydra_config(cfg: DictConfig, run_dir: Path) -> None:
    """Write Hydra's ``.hydra/{config,hydra,overrides}.yaml`` into the run dir (as Hydra would), when run
    by Hydra with ``hydra.output_subdir: null``."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or HydraConfig.get().output_subdir is not None:
        return  # not a Hydra app, or Hydra wrote .hydra itself
    hydra_cfg = HydraConfig.get()
    out = run_dir / HYDRA_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    OmegaConf.save(task, out / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": OmegaConf.to_container(hydra_cfg)}), out / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(hydra_cfg.overrides.task)), out / "overrides.yaml")


def _reopen_log_files(run_dir: Path) -> None:
    """Point the root logger's file handlers inside ``run_dir`` (Hydra's job log) at the new dir after the
    old one was moved aside (they reopen their file on the next record)."""
    import logging

    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).parent == run_dir.resolve():
            h.acquire()
            try:
                if h.stream is not None:
                    h.stream.close()
                h.stream = None
            finally:
                h.release()


#: Below a multirun's sweep dir: one file per failed job (``tdmpc.launcher.FailedJobsCallback`` reads them).
FAILED_JOBS_DIR = ".failed_jobs"


def record_failure(run_dir: str | Path, err: BaseException) -> Path:
    """Record a failed job of a multirun; returns the ``error.json`` written, else the marker.

    ``error.json`` (type, message, traceback) goes into ``run_dir``, unless the job was refused that dir
    (:class:`tdmpc.run_dir.RunDirError`: it belongs to another job, which would delete the file when it
    succeeds) or was refused after moving a run aside and moved it back (``RUN_RESTORED``: the dir is that
    run's again). In every case a marker ``<sweep dir>/.failed_jobs/<unique>.json`` (run dir, type, message) is
    written: :class:`tdmpc.launcher.FailedJobsCallback` reads these, so neither a run dir outside the sweep
    dir nor an ``error.json`` removed by its dir's owner can hide the failure."""
    import json
    import secrets
    import traceback

    from hydra.core.hydra_config import HydraConfig

    from tdmpc.logger import atomic_write_text
    from tdmpc.run_dir import RUN_RESTORED

    run_dir = Path(run_dir)
    info = {"run_dir": str(run_dir), "error": type(err).__name__, "message": str(err)}
    path = None
    if not isinstance(err, RunDirError) and not getattr(err, RUN_RESTORED, False):
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / ERROR_FILE
        atomic_write_text(path, json.dumps({**info, "traceback": "".join(traceback.format_exception(err))},
                                           indent=2) + "\n")
    if HydraConfig.initialized() and HydraConfig.get().sweep.dir:
        marks = Path(str(HydraConfig.get().sweep.dir)) / FAILED_JOBS_DIR
        marks.mkdir(parents=True, exist_ok=True)
        marker = marks / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(4)}.json"
        atomic_write_text(marker, json.dumps(info, indent=2) + "\n")
        path = path or marker
    return path if path is not None else run_dir


def hydra_error_line(err: BaseException) -> str:
    """One line from a Hydra/OmegaConf error and its cause (their lines joined with '; '); an ``OSError`` (Hydra
    creating the run dir) names the path and says what the run dir must be."""
    if isinstance(err, OSError) and err.filename:
        return (f"cannot create the run dir {err.filename} ({err.strerror}); hydra.run.dir / hydra.sweep.dir must "
                f"be a folder that can be created")
    parts: list[str] = []
    for e in (err, err.__cause__):
        for line in str(e).splitlines() if e is not None else []:
            line = line.strip()
            if line.startswith("Config search path"):
                break
            if line and line not in parts:
                parts.append(line)
    line = "; ".join(parts) or type(err).__name__
    unquoted = _unquoted_separators(sys.argv[1:]) if "mismatched input" in line or "extraneous input" in line else []
    if unquoted:
        line += (f"; a value holding '=' or ',' (e.g. the path of a multirun's run dir) must be quoted: "
                 f"\"{unquoted[0]}='...'\"")
    return line


def _unquoted_separators(args: list[str]) -> list[str]:
    """Keys of ``key=value`` overrides whose value holds an unquoted ``=`` (or ``,`` next to a ``/`` of a path),
    which Hydra's override grammar reads as syntax."""
    keys = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and value and value[0] not in "'\"[{" and ("=" in value or ("," in value and "/" in value)):
            keys.append(key.lstrip("+~"))
    return keys


def submitit_error_line(err: BaseException) -> tuple[int, str]:
    """``(exit code, one line)`` for an error of the submitit launchers (hydra/launcher=local|slurm): sbatch
    refusing the sweep (e.g. an unknown partition: 2, the user's setting) or a job that ended without a result
    (killed, out of time or memory: 1). The launcher stops waiting at the first such job, so the line says
    that others may still run and that re-running the command resumes the sweep."""
    text = str(err)
    refused = next((ln.strip() for ln in text.splitlines() if "sbatch: error" in ln), None)
    if refused is not None:
        return 2, f"SLURM refused the sweep ({refused}); check hydra.launcher's settings (scripts/slurm/README.md)"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(err).__name__)
    return 1, (f"a job of the sweep ended without a result (killed, out of time or memory, or crashed: {first[:300]}); "
               f"its log is in the sweep's .submitit folder; other jobs may still be running; re-run the same "
               f"command to resume the sweep (finished jobs are kept)")


def one_line_hydra_errors() -> None:
    """Make Hydra report its own errors (bad override, unknown key, a value of the wrong type, an unknown
    config group option, a run dir it cannot create, a group set to null) as one ``error: ...`` line with exit
    code 2, instead of
    5-9 lines with exit code 1. Errors of the app itself are left to Hydra (a traceback for a bug).
    ``HYDRA_FULL_ERROR=1`` still shows the full traceback. Call before the ``@hydra.main`` function runs."""
    import hydra._internal.utils as hydra_utils
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    original = getattr(hydra_utils.run_and_report, "__wrapped__", hydra_utils.run_and_report)

    def run_and_report(func: Any) -> Any:
        try:
            return func()
        except (HydraException, OmegaConfBaseException, OSError, ValueError) as err:  # e.g. pruning=null
            caught = err
        except RuntimeError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or type(err).__module__.split(".")[0] != "submitit":
                raise
            code, line = submitit_error_line(err)
            fail(line, code=code)
        except KeyboardInterrupt:  # e.g. a launcher waiting for its jobs (a job run here handles it itself)
            if "-m" in sys.argv[1:] or "--multirun" in sys.argv[1:]:
                print("interrupted while waiting for the sweep's jobs (a job that got the signal checkpoints and "
                      "stops; one that did not goes on); re-run the same command to resume the sweep",
                      file=sys.stderr, flush=True)
            else:
                print("interrupted before the command started its work; nothing was changed", file=sys.stderr,
                      flush=True)
            sys.exit(130)
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or _raised_by_app(caught):
            return original(lambda: _reraise(caught))
        fail(hydra_error_line(caught))

    run_and_report.__wrapped__ = original
    hydra_utils.run_and_report = run_and_report


def _raised_by_app(err: BaseException) -> bool:
    """Whether ``err`` came from the app's code (a frame of this checkout below Hydra's ``run_job``)."""
    import traceback

    root = str(Path(__file__).resolve().parents[1])
    frames = traceback.extract_tb(err.__traceback__)
    names = [f.name for f in frames]
    if "run_job" not in names:
        return False
    return any(f.filename.startswith(root) for f in frames[names.index("run_job") + 1:])


def _reraise(err: BaseException) -> None:
    raise err
