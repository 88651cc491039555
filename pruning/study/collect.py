"""Reading a sweep's outputs: every ``result.json``, failed-job marker and ``importance.parquet`` below some folders.

Failed jobs are a run dir with ``error.json``, a prune-job run dir (Hydra's ``.hydra/config.yaml`` with
``checkpoint``, ``metric``, ``ratio``) without ``result.json``, a ``result.json`` that cannot be read or lacks
keys of :data:`REQUIRED_KEYS`, a ``result.json`` whose source checkpoint has changed since its job ran
(``StaleResult``: not reported), and a submitit job whose result pickle holds an error (an unreadable
``importance.parquet`` is added by :mod:`pruning.study.importance_report`). None is fatal.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
IMPORTANCE_FILE = "importance.parquet"
#: Columns of results.csv (then run_dir); ``widths`` is written as JSON.
RESULT_COLUMNS = (
    "task", "seed", "train_seed", "model_size", "metric", "ratio", "scope", "finetune_steps", "dense_return",
    "return_mean", "return_std", "eval_episodes", "params", "params_dense", "flops_policy", "flops_plan",
    "latency_policy_ms", "latency_policy_iqr_ms", "latency_plan_ms", "latency_plan_iqr_ms", "widths",
    "git_commit", "budget", "flops_plan_dense", "flops_ratio_achieved", "channel_ratio_achieved",
    "return_post_prune", "latency_threads", "latency_clock", "checkpoint", "trained_env_steps", "agent",
)
#: Prune-job settings (``result.json``'s ``config.prune``) that change which channels are removed but have no
#: column above; results.csv records them after :data:`RESULT_COLUMNS` so that a sweep over them (e.g.
#: ``normalize_by=component,group``) can be told apart (:mod:`pruning.study.variants`). ``None`` (null): the
#: training run's tracker setting; ``per_component_ratios`` as JSON.
SETTING_COLUMNS = ("prune_latent", "min_channels", "smoothing", "normalize", "normalize_by", "per_component_ratios")
#: Keys a result.json must hold to be reported (``pruning.study.prune_job`` writes these and more).
REQUIRED_KEYS = (
    "task", "seed", "metric", "ratio", "scope", "finetune_steps", "dense_return", "return_mean", "return_std",
    "params", "params_dense", "flops_policy", "flops_plan", "latency_policy_ms", "latency_plan_ms",
    "latency_policy_iqr_ms", "latency_plan_iqr_ms", "widths", "git_commit", "config",
)
IMPORTANCE_COLUMNS = ("step", "component", "layer", "channel", "metric", "score")
FAILURE_COLUMNS = ("run_dir", "error", "message")


class ReportError(ValueError):
    """Nothing to report (no folder, no result); the message is one line for the user."""


# ------------------------------------------------------------------------------------------ collect


def failure(run_dir: Path | str, error: str, message: str) -> dict:
    return {"run_dir": str(run_dir), "error": error, "message": message}


def _yaml(path: Path) -> dict | None:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _is_prune_job(run_dir: Path) -> bool:
    cfg = _yaml(run_dir / ".hydra" / "config.yaml")
    return cfg is not None and {"checkpoint", "metric", "ratio"} <= set(cfg)


class _NoGlobals(pickle.Unpickler):
    """Loads plain data only: a submitit error pickle is ``("error", traceback string)``; anything that
    needs a class (a successful job's return value) is refused, so no code of the pickle runs."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def submitit_error(path: Path) -> str | None:
    """The last line of the traceback in a submitit ``*_result.pkl`` of a failed job, else ``None``."""
    try:
        with open(path, "rb") as f:
            status, payload = _NoGlobals(f).load()
    except Exception:  # a success pickle (holds classes), a truncated file, ...
        return None
    if status != "error" or not isinstance(payload, str):
        return None
    lines = [ln.strip() for ln in payload.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "error (no traceback)"


def _current(root: Path, paths: Iterable[Path]) -> list[Path]:
    """``paths`` (below ``root``) sorted, without those inside a run dir moved aside below ``root``
    (``<run>.old-<time>``: superseded or overwritten jobs, kept but not reported;
    :data:`tdmpc.run_dir.OLD_MARK`). A moved-aside dir given as ``root`` itself is reported."""
    from tdmpc.run_dir import OLD_MARK

    return sorted(p for p in paths if not any(OLD_MARK in part for part in p.relative_to(root).parts))


def collect_results(dirs: Iterable[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(results, failures)`` below ``dirs`` (see the module docstring for what counts as failed).

    A run dir holding both ``result.json`` and ``error.json`` (failed once, then completed) counts as
    completed. A run dir found below two of ``dirs`` (a sweep and its subfolder, or one folder given as a
    relative and an absolute path) is read once. A result whose source checkpoint has changed since the
    job ran (:func:`stale_source`: e.g. its training run went on) is not reported but listed as a failure
    (``StaleResult``). Raises :class:`ReportError` for a folder that does not exist.
    """
    rows, failures = [], []
    read: set[Path] = set()  # resolved run dirs already reported (a result or a failure)
    hashes: dict[Path, str] = {}

    def fail(run_dir: Path, error: str, message: str) -> None:
        key = run_dir.resolve()
        if (key, error) not in failed:
            failed.add((key, error))
            failures.append(failure(run_dir, error, message))

    failed: set[tuple[Path, str]] = set()
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise ReportError(f"not a folder: {d}")
        for path in _current(d, d.rglob(RESULT_FILE)):
            run = path.parent.resolve()
            if run in read:
                continue  # the same run dir below two of the given folders
            read.add(run)
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                fail(path.parent, "UnreadableResult", str(err))
                continue
            missing = [k for k in REQUIRED_KEYS if not isinstance(data, dict) or k not in data]
            if missing:
                fail(path.parent, "IncompleteResult", f"result.json lacks {', '.join(missing)}")
                continue
            source = recorded_source(path.parent)
            stale = stale_source(data, source, hashes)
            if stale is not None:
                fail(path.parent, "StaleResult", stale)
                continue
            row = {c: data.get(c) for c in RESULT_COLUMNS}
            row["agent"] = agent_id(data, source)
            row["widths"] = json.dumps(row["widths"])
            row.update(_settings(data))
            row["run_dir"] = str(path.parent)
            rows.append(row)
        for path in _current(d, d.rglob(ERROR_FILE)):
            run = path.parent.resolve()
            if run in read:
                continue
            read.add(run)
            try:
                info = json.loads(path.read_text())
                fail(path.parent, str(info.get("error")), str(info.get("message")))
            except (OSError, ValueError, AttributeError):
                fail(path.parent, "UnreadableError", f"unreadable {path.name}")
        for path in _current(d, d.rglob(".hydra/config.yaml")):
            run = path.parent.parent
            if run.resolve() not in read and _is_prune_job(run):
                read.add(run.resolve())
                fail(run, "NoResult", "no result.json or error.json (killed, timed out, or still running)")
        for path in _current(d, d.rglob(".submitit/*/*_result.pkl")):
            message = submitit_error(path)
            if message is not None:
                fail(path.parent, "SubmititError", message)
    results = pd.DataFrame(rows, columns=[*RESULT_COLUMNS, *SETTING_COLUMNS, "run_dir"])
    return results, pd.DataFrame(failures, columns=FAILURE_COLUMNS)


def recorded_source(run_dir: Path) -> str | None:
    """The sha256 of the source checkpoint a prune job started from, as its ``run.json`` records it
    (:mod:`pruning.study.prune_dir`); ``None`` without a readable record."""
    from tdmpc.run_dir import MANIFEST

    try:
        sha = json.loads((run_dir / MANIFEST).read_text()).get("source_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return sha if isinstance(sha, str) and sha else None


def agent_id(data: dict, source: str | None) -> str:
    """Which trained agent a prune job pruned: ``source`` (:func:`recorded_source`: the same bytes, whatever path
    they were read from), else the checkpoint path of ``result.json`` (resolved if absolute), else ``""``. Two
    training runs with the same seed are two agents (:mod:`pruning.study.stats`)."""
    if source:
        return f"sha256:{source}"
    ckpt = data.get("checkpoint")
    if not isinstance(ckpt, str) or not ckpt:
        return ""
    return str(Path(ckpt).resolve()) if Path(ckpt).is_absolute() else ckpt


def agent_column(df: pd.DataFrame) -> pd.Series:
    """Each job's agent: the ``agent`` column of :func:`collect_results`, else ``checkpoint``, else ``""`` (one
    agent per training seed)."""
    for col in ("agent", "checkpoint"):
        if col in df:
            return df[col].fillna("").astype(str)
    return pd.Series("", index=df.index)


def stale_source(data: dict, want: str | None, hashes: dict[Path, str] | None = None) -> str | None:
    """Why a prune job's ``result.json`` no longer describes the checkpoint at its ``checkpoint`` path, else
    ``None``: ``want`` is the sha256 of the source checkpoint the job was started from (:func:`recorded_source`),
    and the file there now has other bytes (its training run went on, or it was retrained). A result whose
    checkpoint is gone or recorded as a relative path, or without a record, cannot be checked and is kept.
    ``hashes``: a cache (resolved path -> sha256) shared over one report."""
    from tdmpc.run_dir import file_sha256

    ckpt = data.get("checkpoint")
    if not want or not isinstance(ckpt, str) or not Path(ckpt).is_absolute() or not Path(ckpt).is_file():
        return None  # (a relative path, as older jobs wrote it, names another file from another folder)
    key = Path(ckpt).resolve()
    hashes = {} if hashes is None else hashes
    if key not in hashes:
        try:
            hashes[key] = file_sha256(key)
        except OSError:
            return None
    if hashes[key] == want:
        return None
    return (f"its source checkpoint {ckpt} has changed since this job ran (e.g. its training run went on or was "
            f"retrained: sha256 {hashes[key][:12]}, the job's {str(want)[:12]}); re-run the job to report it")


def _settings(data: dict) -> dict:
    """The :data:`SETTING_COLUMNS` of one result.json (from ``config.prune``; a top-level key where the
    config lacks it)."""
    cfg = data.get("config")
    prune = cfg.get("prune") if isinstance(cfg, dict) else None
    prune = prune if isinstance(prune, dict) else {}
    out = {k: prune.get(k, data.get(k)) for k in SETTING_COLUMNS}
    out["per_component_ratios"] = json.dumps(out["per_component_ratios"] or {}, sort_keys=True)
    return out


@dataclass
class ImportanceRun:
    """A training run's importance file; ``key`` groups runs in the report (the task, else the run).

    ``env_steps_per_update``: the run's final ``env_step / updates`` (its ``summary.json``), used to put the
    snapshots' update counts on an env-step axis; ``None`` when the run has no summary (unfinished)."""

    path: Path
    name: str
    task: str | None
    env_steps_per_update: float | None = None

    @property
    def key(self) -> str:
        return self.task or self.name


def find_importance(dirs: Iterable[str | Path]) -> list[ImportanceRun]:
    """Every ``importance.parquet`` below ``dirs`` with its run's task (from the run's ``config.yaml``)."""
    runs, seen = [], set()
    for d in dirs:
        for path in _current(Path(d), Path(d).rglob(IMPORTANCE_FILE)):
            if path.resolve() in seen:
                continue  # below two of the given folders: one run, counted once
            seen.add(path.resolve())
            cfg = _yaml(path.parent / "config.yaml") or _yaml(path.parent / ".hydra" / "config.yaml") or {}
            runs.append(ImportanceRun(path=path, name="_".join(path.parent.parts[-2:]), task=cfg.get("task"),
                                      env_steps_per_update=_env_steps_per_update(path.parent)))
    return runs


def _env_steps_per_update(run_dir: Path) -> float | None:
    """``env_step / updates`` of a finished training run (``summary.json``), else ``None``."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        env_step, updates = float(summary["env_step"]), float(summary["updates"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return env_step / updates if updates > 0 and env_step > 0 else None


def read_importance(path: Path) -> pd.DataFrame:
    """An importance table (:data:`IMPORTANCE_COLUMNS`); ``ValueError`` if unreadable or incomplete."""
    try:
        table = pd.read_parquet(path, columns=list(IMPORTANCE_COLUMNS))
    except Exception as err:  # pyarrow raises several types for bad files / missing columns
        raise ValueError(f"unreadable {path.name}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    return table
