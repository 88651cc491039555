"""Retained return vs the control rate a planned action allows (the deployment view of a sweep).

Control rate: ``1000 / latency_plan_ms`` Hz, the planned-action latency as the prune job measured it (batch-1
observation, ``latency_threads`` torch threads, ``latency_clock``; :mod:`pruning.study.prune_job`). Per
metric and ratio a point at the median over runs (``x = 1000 / median latency``; bars: the rates at the
latency quartiles) and the median retained return with its interquartile range over runs (retained: 100 ×
return / the same agent's dense return after the same fine-tune, :func:`pruning.study.stats.retained_returns`).
Reference lines at the control loops a controller has to fit (:data:`REFERENCE_HZ`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pruning.study.plots import cost_axis, figure, latency_setting, n_label, save, slug
from pruning.study.tables import DENSE

REFERENCE_HZ = (50, 100, 300)
POINT_COLUMNS = ("task", "metric", "ratio", "n", "latency_plan_ms", "hz", "hz_low", "hz_high", "retained",
                 "retained_q25", "retained_q75")


def control_rate_points(results: pd.DataFrame) -> pd.DataFrame:
    """One row per task x metric x ratio (dense: metric ``dense``, ratio 0, retained 100 by definition)."""
    from pruning.study.stats import retained_returns

    def timed(d: pd.DataFrame) -> pd.DataFrame:
        lat = pd.to_numeric(d["latency_plan_ms"], errors="coerce").astype(float)
        return d[lat > 0].assign(latency_plan_ms=lat[lat > 0])  # NaN > 0 is False: untimed jobs go

    df = timed(results)
    if df.empty:
        return pd.DataFrame(columns=POINT_COLUMNS)
    # retained returns against every dense reference, timed or not (a dense job without a latency is still
    # the reference of its runs); then the timed jobs only
    pruned = timed(retained_returns(results))
    dense = df[df["ratio"] == 0].assign(metric=DENSE, retained=100.0)
    rows = []
    for (task, metric, ratio), g in pd.concat([dense, pruned]).groupby(["task", "metric", "ratio"], sort=True):
        lat = g["latency_plan_ms"].to_numpy(float)
        ret = g["retained"].to_numpy(float)
        ret = ret[np.isfinite(ret)]
        q25, med, q75 = np.percentile(lat, [25, 50, 75])
        r25, rmed, r75 = np.percentile(ret, [25, 50, 75]) if ret.size else (np.nan,) * 3
        rows.append({"task": task, "metric": metric, "ratio": float(ratio), "n": len(g), "latency_plan_ms": med,
                     "hz": 1000.0 / med, "hz_low": 1000.0 / q75, "hz_high": 1000.0 / q25, "retained": rmed,
                     "retained_q25": r25, "retained_q75": r75})
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def control_rate_figure(points: pd.DataFrame, task: str, setting: str):
    """The plot of one task's :func:`control_rate_points`; returns the Figure."""
    fig, axes = figure(6.4, 4.4)
    ax = axes[0, 0]
    pruned = points[points["metric"] != DENSE]
    for k, (metric, m) in enumerate(pruned.groupby("metric", sort=True)):
        m = m.sort_values("hz")
        hz, ret = m["hz"].to_numpy(float), m["retained"].to_numpy(float)
        xerr = [hz - m["hz_low"].to_numpy(float), m["hz_high"].to_numpy(float) - hz]
        yerr = [ret - m["retained_q25"].to_numpy(float), m["retained_q75"].to_numpy(float) - ret]
        ax.errorbar(hz, ret, xerr=xerr, yerr=yerr, fmt="o-", ms=4, color=f"C{k % 10}", capsize=2, lw=1.2,
                    label=f"{metric} ({n_label(m['n'])})")
    dense = points[points["metric"] == DENSE]
    if len(dense):
        ax.scatter(dense["hz"].to_numpy(float), dense["retained"].to_numpy(float), marker="*", s=160, color="black",
                   zorder=5, label=f"{DENSE} ({n_label(dense['n'])})")
    lo = min(float(points["hz_low"].min()), min(REFERENCE_HZ)) / 1.25
    hi = max(float(points["hz_high"].max()), max(REFERENCE_HZ)) * 1.25
    for hz in REFERENCE_HZ:
        ax.axvline(hz, color="0.4", ls="--", lw=0.8, zorder=0, gid=f"reference {hz} Hz")
        ax.text(hz, 1.0, f" {hz} Hz", transform=ax.get_xaxis_transform(), fontsize=7, va="bottom", ha="center")
    ax.set_xlim(lo, hi)
    cost_axis(ax, "x", lo, hi)
    ax.set_xlabel("planned-action control rate (Hz = 1000 / latency_plan_ms)")
    ax.set_ylabel("retained return (% of dense; median, IQR over runs)")
    ax.set_title(f"{task}: retained return vs control rate\nlatency of one planned action: {setting}", fontsize=9,
                 pad=14)
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def plot_control_rate(results: pd.DataFrame, out: Path) -> list[Path]:
    """``control_rate_<task>.{png,svg,csv}`` per task with latencies (``_<budget>_<scope>_ft<steps>`` added
    where a task has jobs of several: :func:`pruning.study.variants.comparable_sets`); the CSV holds the
    plotted points."""
    from pruning.study.variants import comparable_sets

    paths: list[Path] = []
    for task, title, suffix, jobs in comparable_sets(results):  # one per budget x scope x fine-tuning steps
        p = control_rate_points(jobs)
        if p.empty:
            continue
        p.to_csv(out / f"control_rate_{slug(task)}{suffix}.csv", index=False)
        fig = control_rate_figure(p, title, latency_setting(jobs))
        paths += save(fig, out, f"control_rate_{slug(task)}{suffix}")
    return paths
