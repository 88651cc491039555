"""Sweep report: results table, summary, Pareto and control-rate plots, importance heat-maps, rank correlations.

    python scripts/report.py SWEEP_DIR... [--out DIR]

Reads every ``result.json`` (prune jobs, :mod:`pruning.study.prune_job`), the markers of failed jobs and every
``importance.parquet`` (training runs, :mod:`pruning.tracker`) below the given folders
(:mod:`pruning.study.collect`) and writes into ``out``:

- ``results.csv``: one row per prune job (:data:`RESULT_COLUMNS`, the prune settings of
  :data:`~pruning.study.collect.SETTING_COLUMNS`, then ``run_dir``); every other output labels apart the jobs
  that differ in more than metric and ratio (:mod:`pruning.study.variants`);
- ``summary.md`` / ``summary.csv``: per task x scope x fine-tuning steps x metric x ratio the mean ± std
  over seeds of the eval return, the return retained as % of the dense reference (the mean return of the
  ``ratio=0`` jobs of the same task and fine-tuning steps; the training run's final return when there are
  none), mean params, FLOPs and latency; the best metric of each FLOPs budget (ratio) in bold; warnings
  for pruned models that measured slower than the dense one (also printed); the mean rank correlation
  between metrics; the failed jobs; the plots (:mod:`pruning.study.tables`);
- ``pareto_flops_<task>.{png,svg}`` and ``pareto_latency_<task>.{png,svg}``: return vs planned-action FLOPs
  / latency (:mod:`pruning.study.plots`);
- ``control_rate_<task>.{png,svg,csv}``: retained return vs planned-action control rate, 1000 /
  latency_plan_ms Hz, with 50 / 100 / 300 Hz lines (:mod:`pruning.study.control_rate`);
- ``importance_<task>.{png,svg,csv}`` and ``rank_correlation_<task>.{png,svg,csv}``: importance over
  training (:mod:`pruning.study.importance_report`);
- ``performance_profile_*.{png,svg}`` and the rliable statistics in ``summary.md`` (:mod:`pruning.study.stats`).

Runs whose ``config.yaml`` names no task are reported under their folder name. Failed jobs are listed in
``summary.md``, never fatal. The names of the parts stay importable from here.

The files are built in a staging folder inside ``out`` and moved in when all are written
(:func:`publish`), so a report killed while it computes leaves the previous report whole; files of the
previous report that the new one does not write (a metric or task no longer present) are removed, as listed
in ``out/.report_files.json``. ``out/.report_incomplete`` exists only during the moves (milliseconds).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pruning.study.collect import (  # noqa: F401  (re-exported)
    ERROR_FILE,
    FAILURE_COLUMNS,
    IMPORTANCE_COLUMNS,
    IMPORTANCE_FILE,
    REQUIRED_KEYS,
    RESULT_COLUMNS,
    RESULT_FILE,
    ImportanceRun,
    ReportError,
    collect_results,
    find_importance,
    read_importance,
    submitit_error,
)
from pruning.study.control_rate import control_rate_points, plot_control_rate  # noqa: F401
from pruning.study.importance_report import (  # noqa: F401
    importance_report,
    layer_importance,
    layer_labels,
    plot_importance,
    plot_rank_correlations,
    plot_run_importance,
    rank_correlations,
)
from pruning.study.plots import pareto_front, plot_pareto  # noqa: F401
from pruning.study.tables import (  # noqa: F401
    DENSE,
    SUMMARY_KEYS,
    display_table,
    print_summary,
    slower_than_dense,
    summarize,
    summary_markdown,
    with_budget,
)
from pruning.study.variants import label_variants
from tdmpc.temp_file import remove_abandoned_dirs


def check_out_dir(out: str | Path) -> Path:
    """``out`` as a Path if it is a folder or can be made one; else :class:`ReportError` (nothing written)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out}: an existing file, not a folder; give a folder (it is created if missing)")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ReportError(f"--out {out}: cannot be created, {parent} is a file; give a folder")
    if parent != out and not _writable(parent):
        raise ReportError(f"--out {out}: cannot be created, {parent} is not writable; give a writable folder")
    return out


def _writable(path: Path) -> bool:
    import os

    return os.access(path, os.W_OK | os.X_OK)


def write_report(dirs: Sequence[str | Path], out: str | Path) -> pd.DataFrame:
    """Write every report file into ``out`` (see the module docstring); returns the summary table.

    Raises :class:`ReportError` when ``out`` is a file or cannot be created, a folder is missing, or
    nothing (no result, no failure, no importance file) is found; nothing is written then.
    """
    out = check_out_dir(out)
    results, failures = collect_results(dirs)
    runs = find_importance(dirs)
    if results.empty and failures.empty and not runs:
        raise ReportError(f"no result.json, error.json or importance.parquet below {', '.join(map(str, dirs))}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"--out {out}: cannot be created ({err.strerror or err}); give a writable folder") from None
    remove_abandoned_dirs(out, STAGING_PREFIX)  # left by a report killed while it computed
    staging = out / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"  # pids repeat (containers)
    staging.mkdir()
    try:
        summary = _write_files(results, failures, runs, staging)
        publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


#: Inside ``out``: the staging folder of a report being written, the list of the report's files, and the marker
#: that exists while files are moved in (see the module doc).
STAGING_PREFIX = ".report-staging-"
FILES_LIST = ".report_files.json"
INCOMPLETE = ".report_incomplete"


def publish(staging: Path, out: Path) -> None:
    """Move every file of ``staging`` into ``out`` (each by ``os.replace``), after removing the files of the
    previous report (``out/.report_files.json``) that this one does not write; ``out/.report_incomplete``
    marks the moves."""
    from tdmpc.logger import atomic_write_text

    names = sorted(p.name for p in staging.iterdir() if p.is_file())
    marker = out / INCOMPLETE
    marker.write_text("this report was being written when it stopped; run scripts/report.py again\n")
    try:
        previous = json.loads((out / FILES_LIST).read_text())
    except (OSError, ValueError):
        previous = []
    for name in previous if isinstance(previous, list) else []:
        if isinstance(name, str) and name not in names and "/" not in name and not name.startswith("."):
            (out / name).unlink(missing_ok=True)
    for name in names:
        os.replace(staging / name, out / name)
    atomic_write_text(out / FILES_LIST, json.dumps(names, indent=1) + "\n")
    marker.unlink()


def _write_files(results: pd.DataFrame, failures: pd.DataFrame, runs: list, out: Path) -> pd.DataFrame:
    """Every report file of :func:`write_report` into ``out``; returns the summary table."""
    results.to_csv(out / "results.csv", index=False)
    results = label_variants(results)  # jobs that differ in more than metric and ratio are not pooled
    summary = summarize(results)
    summary.to_csv(out / "summary.csv", index=False)
    plots = [*plot_pareto(results, out), *plot_control_rate(results, out)] if not results.empty else []
    correlations, bad, more = importance_report(runs, out)
    plots += more
    failures = pd.concat([failures, pd.DataFrame(bad, columns=FAILURE_COLUMNS)], ignore_index=True)
    warnings = slower_than_dense(summary)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr, flush=True)
    stats_lines = statistics_report(results, out, plots)
    (out / "summary.md").write_text(summary_markdown(summary, failures, correlations, (), plots, stats_lines,
                                                     warnings))
    return summary


def statistics_report(results: pd.DataFrame, out: Path, plots: list[Path]) -> list[str]:
    """IQM / probability of improvement / AUC (:mod:`pruning.study.stats`) per budget x scope x fine-tuning
    steps over all tasks, as ``summary.md`` lines; performance-profile plots are added to ``plots``."""
    from pruning.study import stats

    if results.empty or not (results["ratio"] > 0).any():
        return []
    df = with_budget(results)
    df["flops_plan_dense"] = pd.to_numeric(df["flops_plan_dense"], errors="coerce")
    dense_flops = df[df["ratio"] == 0].groupby("task")["flops_plan"].mean()
    df["flops_plan_dense"] = df["flops_plan_dense"].fillna(df["task"].map(dense_flops))
    lines = ["## Statistics over runs (rliable)", ""]
    for (budget, scope, ft), g in stats.retained_returns(df).groupby(["budget", "scope", "finetune_steps"]):
        title = f"budget {budget}, scope {scope}, {ft:g} fine-tuning steps, tasks {', '.join(sorted(g['task'].unique()))}"
        lines += stats.statistics_markdown(g, title)
        plots += stats.plot_performance_profiles(g, out, f"performance_profile_{budget}_{scope}_ft{ft:g}")
    return lines
