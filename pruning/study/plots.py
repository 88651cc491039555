"""Figure helpers shared by the report's plots, readable cost axes, and the Pareto plots (return vs
planned-action FLOPs / latency).

Cost axes: a log axis only when the values span at least a decade, with major ticks at 1, 2 and 5 × 10^k
labelled as plain numbers (so every decade carries labels); otherwise a linear axis with plain labels (no
offset, no scientific notation). FLOPs are plotted in MFLOP.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pruning.study.tables import DENSE, sample_std

LOG_DECADE = 10.0  # use a log axis when max / min >= this


def figure(width: float, height: float, rows: int = 1, cols: int = 1, **kw):
    """A Figure with an Agg canvas that is not registered with pyplot (no GUI backend, nothing to close)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False, **kw)


def save(fig, out: Path, stem: str) -> list[Path]:
    import matplotlib

    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    with matplotlib.rc_context({"svg.hashsalt": "ca-prune"}):  # stable SVG ids
        fig.savefig(paths[0], dpi=130)
        fig.savefig(paths[1], metadata={"Date": None})
    return paths


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "-" for c in str(name))


def _plain(value: float, _pos=None) -> str:
    """A tick label as a plain number: ``300``, ``1,200``, ``0.5``."""
    if value == 0:
        return "0"
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.3g}"


def cost_axis(ax, which: str, lo: float, hi: float) -> str:
    """Scale and label the ``x`` or ``y`` axis for values in ``[lo, hi]``; returns ``"log"`` or ``"linear"``."""
    from matplotlib import ticker

    axis = ax.xaxis if which == "x" else ax.yaxis
    if lo > 0 and hi / lo >= LOG_DECADE:
        (ax.set_xscale if which == "x" else ax.set_yscale)("log")
        axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(ticker.FuncFormatter(_plain))
        axis.set_minor_locator(ticker.LogLocator(base=10, subs=np.arange(1, 10)))
        axis.set_minor_formatter(ticker.NullFormatter())
        return "log"
    axis.set_major_locator(ticker.MaxNLocator(nbins=6))
    plain = ticker.ScalarFormatter(useOffset=False)  # decimals follow the tick spacing: 11.1, 11.2, ...
    plain.set_scientific(False)
    axis.set_major_formatter(plain)
    return "linear"


def n_label(counts: Sequence[int]) -> str:
    """``n = 3`` or ``n = 2–3`` for the runs behind a plotted mean."""
    lo, hi = int(min(counts)), int(max(counts))
    return f"n = {lo}" if lo == hi else f"n = {lo}–{hi}"


def latency_setting(results: pd.DataFrame) -> str:
    """How the latency was measured (``latency_threads`` / ``latency_clock`` of the results), e.g.
    ``batch 1, 1 thread, thread clock``."""
    parts = ["batch 1"]
    threads = sorted({int(v) for v in pd.to_numeric(results.get("latency_threads", pd.Series(dtype=float))).dropna()})
    if threads:
        parts.append(f"{' / '.join(map(str, threads))} thread{'' if threads == [1] else 's'}")
    clocks = sorted({str(v) for v in results.get("latency_clock", pd.Series(dtype=object)).dropna()})
    if clocks:
        parts.append(f"{' / '.join(clocks)} clock")
    return ", ".join(parts)


def pareto_front(cost: Sequence[float], value: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (lower-or-equal cost and higher value), by cost.

    Of points with equal cost only the first of the highest value is kept. Sort by (cost, -value); a point
    is on the front iff its value exceeds the running maximum of the values before it. Points with a NaN
    cost or value are never on it (and do not hide the others).
    """
    cost, value = np.asarray(cost, dtype=float), np.asarray(value, dtype=float)
    finite = np.flatnonzero(np.isfinite(cost) & np.isfinite(value))
    if finite.size == 0:
        return []
    order = finite[np.lexsort((-value[finite], cost[finite]))]
    v = value[order]
    before = np.maximum.accumulate(np.concatenate([[-np.inf], v[:-1]]))
    return order[v > before].tolist()


#: (column, scale, axis label, file stem, IQR column) of the two Pareto plots.
PARETO_AXES = (("flops_plan", 1e-6, "MFLOP per planned action", "pareto_flops", None),
               ("latency_plan_ms", 1.0, "latency per planned action (ms)", "pareto_latency", "latency_plan_iqr_ms"))


def pareto_figure(t: pd.DataFrame, task: str, col: str, scale: float, label: str, iqr_col: str | None):
    """Return vs one cost of one task's jobs (see :func:`plot_pareto`); returns the Figure."""
    fig, axes = figure(6.4, 4.4)
    ax = axes[0, 0]
    dense, pruned = t[t["ratio"] == 0], t[t["ratio"] > 0]
    d_cost, d_ret = dense[col].mean() * scale, dense["return_mean"].mean()
    for k, (metric, m) in enumerate(pruned.groupby("metric", sort=True)):
        color = f"C{k % 10}"
        cost = m[col].to_numpy(float) * scale
        if iqr_col is not None and iqr_col in m and m[iqr_col].notna().any():
            ax.errorbar(cost, m["return_mean"].to_numpy(float), xerr=m[iqr_col].to_numpy(float) * scale / 2, fmt="none",
                        ecolor=color, alpha=0.35, lw=0.8)
        ax.scatter(cost, m["return_mean"].to_numpy(float), color=color, alpha=0.25, s=10, linewidths=0)
        means = m.groupby("ratio").agg(cost=(col, "mean"), ret=("return_mean", "mean"),
                                       std=("return_mean", sample_std), n=("return_mean", "size")).reset_index()
        means["cost"] *= scale
        ax.errorbar(means["cost"].to_numpy(float), means["ret"].to_numpy(float), yerr=means["std"].to_numpy(float),
                    fmt="o", ms=4, color=color, capsize=2, lw=0.8)
        label_n = n_label(means["n"])
        if len(dense):  # the dense model is the ratio-0 point of every metric
            means = pd.concat([means, pd.DataFrame({"ratio": [0.0], "cost": [d_cost], "ret": [d_ret],
                                                    "std": [0.0], "n": [len(dense)]})], ignore_index=True)
        front = means.iloc[pareto_front(means["cost"], means["ret"])]
        ax.step(front["cost"].to_numpy(float), front["ret"].to_numpy(float), where="post", color=color,
                label=f"{metric} ({label_n})", lw=1.5)
    if len(dense):
        ax.scatter([d_cost], [d_ret], marker="*", s=160, color="black", label=f"{DENSE} (n = {len(dense)})", zorder=5)
    values = t[col].to_numpy(float) * scale
    values = values[np.isfinite(values)]
    if values.size:
        cost_axis(ax, "x", float(values.min()), float(values.max()))
    ax.set_xlabel(label)
    ax.set_ylabel("eval return (mean ± std over runs)")
    what = label.split(" per")[0]
    extra = "; horizontal bars: IQR of each job's timing repeats" if iqr_col else ""
    ax.set_title(f"{task}: return vs {what}\ndots: jobs; markers: mean per ratio{extra}", fontsize=9)
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_pareto(results: pd.DataFrame, out: Path) -> list[Path]:
    """Return vs planned-action FLOPs and vs latency per task: every job a dot (latency with the IQR of its
    timing repeats), the seed mean of each ratio with its std, one Pareto line per metric through the means
    it is not beaten on (no other mean of that metric has lower cost and higher return), dense as a star;
    legends give the runs (n) behind each mean."""
    from pruning.study.variants import comparable_sets

    paths: list[Path] = []
    for task, title, suffix, t in comparable_sets(results):  # one figure per budget x scope x fine-tuning
        for col, scale, label, stem, iqr_col in PARETO_AXES:
            if iqr_col is not None:
                label = f"{label[:-1]}; {latency_setting(t)})"
            fig = pareto_figure(t, title, col, scale, label, iqr_col)
            paths += save(fig, out, f"{stem}_{slug(task)}{suffix}")
    return paths
