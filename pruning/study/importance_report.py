"""Importance over training, per task: the layers' share of importance (heat-maps) and the rank correlation
between metrics, from the training runs' ``importance.parquet`` (:mod:`pruning.tracker`).

- ``importance_<task>.{png,svg}`` (+ ``.csv``): per metric a heat-map layer x step of the layer's share of
  importance, ``mean score of its channels / sum over layers of that mean``, averaged over the training
  runs of the task: the "dynamic shifts" of importance during training. Shares of every metric lie in
  [0, 1] and sum to 1 per step, so all panels use **one colour scale** (0 to the largest share of any
  panel) and can be compared; a metric that spreads its importance evenly (``random``) shows a flat band.
- ``rank_correlation_<task>.{png,svg}`` (+ ``.csv``): Spearman's rho between the channel scores of every
  pair of metrics at each snapshot step, mean ± std over the runs of the task.

Steps: the tracker records update counts; a run with a ``summary.json`` (finished) has them converted to
env steps with its final ``env_step / updates`` (exact for ``updates_per_step=1`` after pretraining; the
pretraining updates all happen at the end of seeding, so snapshots taken during pretraining are placed
before it). Runs without one keep updates, and the axis says so.

Spearman's rho is the Pearson correlation of ranks (pandas only, no scipy; ties get their mean rank).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pruning.study.collect import ImportanceRun, failure, read_importance
from pruning.study.plots import figure, save, slug

ENV_STEPS = "env step"
UPDATES = "update"
#: Readable names of the TD-MPC components in layer labels.
COMPONENT_NAMES = {"qs": "Q-member", "encoder": "encoder", "dynamics": "dynamics", "reward": "reward",
                   "policy": "policy"}
LAYER_NOTE = ("layer `component/[member/]index`: the channels produced by the nn.Linear at that index of the "
              "component's nn.Sequential (`qs/1/4`: Q-ensemble member 1, its Linear at index 4); "
              "`latent`: the latent shared by all components")


def layer_importance(table: pd.DataFrame) -> pd.DataFrame:
    """Per (metric, component, layer, step): the mean score of the layer's channels and its ``share``,
    that mean divided by the sum of the means of all layers at that step and metric (columns sum to 1).
    Layers keep the order of the file (the model's order)."""
    g = table.groupby(["metric", "component", "layer", "step"], sort=False, observed=True)["score"].mean()
    total = g.groupby(level=["metric", "step"], observed=True).transform("sum")
    out = g.rename("score").to_frame()
    out["share"] = g / total.where(total > 0)
    return out.reset_index()


def rank_correlations(table: pd.DataFrame) -> pd.DataFrame:
    """Spearman's rho between the channel scores of every pair of metrics at every snapshot step,
    computed **within each layer** (group) and then averaged over layers weighted by their channels.

    Ranks within (step, layer, metric), then Pearson's r of the ranks per (step, layer): ``rho =
    cov(R_a, R_b) / (sd(R_a) sd(R_b))``. Within a layer, because pruning compares channels after a per-layer
    normalisation: pooling all layers would mix the between-layer scale of the raw scores into the
    ranking. Layers where a metric is constant (rho undefined) are left out of that pair's mean; channels
    missing in one metric are left out of that pair. Pairs (a, b) with a < b alphabetically.
    """
    wide = table.pivot_table(index=["step", "layer", "channel"], columns="metric", values="score", observed=True)
    ranks = wide.groupby(level=["step", "layer"]).rank()
    corr = ranks.groupby(level=["step", "layer"]).corr()
    corr.index.names = ["step", "layer", "metric_a"]
    corr.columns.name = "metric_b"
    long = corr.stack().rename("spearman").reset_index()
    long = long[(long["metric_a"] < long["metric_b"]) & long["spearman"].notna()]
    sizes = wide.groupby(level=["step", "layer"]).size().rename("channels")
    long = long.join(sizes, on=["step", "layer"])
    long["w"] = long["spearman"] * long["channels"]
    agg = long.groupby(["metric_a", "metric_b", "step"])[["w", "channels"]].sum()
    agg["spearman"] = agg["w"] / agg["channels"]
    return agg.reset_index().sort_values(["metric_a", "metric_b", "step"]).reset_index(drop=True)[
        ["step", "metric_a", "metric_b", "spearman"]]


def layer_labels(layers: Sequence[str]) -> list[str]:
    """Readable labels: ``qs/0/4`` -> ``qs/0/4 · Q-member 0, hidden 2`` (the k-th Linear of that component
    or member, in the order of ``layers``), ``latent`` -> ``latent · shared``."""
    seen: dict[str, int] = {}
    labels = []
    for name in layers:
        parts = str(name).split("/")
        if len(parts) < 2:
            labels.append(f"{name} · shared" if name == "latent" else str(name))
            continue
        owner = "/".join(parts[:-1])
        seen[owner] = seen.get(owner, 0) + 1
        who = COMPONENT_NAMES.get(parts[0], parts[0])
        member = f" {parts[1]}" if len(parts) == 3 else ""
        labels.append(f"{name} · {who}{member}, hidden {seen[owner]}")
    return labels


def shared_norm(shares: np.ndarray):
    """One logarithmic colour scale for every panel: from the smallest positive share (at least 1/1000 of
    the largest) to the largest share of any metric. Logarithmic, because one layer (often the shared
    latent) can hold most of a metric's importance and a linear scale would hide every other layer."""
    from matplotlib.colors import LogNorm

    positive = shares[np.isfinite(shares) & (shares > 0)]
    vmax = float(positive.max()) if positive.size else 1.0
    vmin = max(float(positive.min()), vmax / 1000) if positive.size else vmax / 1000
    return LogNorm(vmin=min(vmin, vmax / 2), vmax=vmax)


def importance_figure(key: str, layers: pd.DataFrame, step_unit: str = UPDATES):
    """Heat-maps layer x step of the importance share, one panel per metric, one colour scale
    (:func:`shared_norm`); returns ``(figure, images)`` (``None`` when ``layers`` is empty)."""
    import matplotlib

    metrics = list(dict.fromkeys(layers["metric"]))
    if not metrics:
        return None, []
    order = list(dict.fromkeys(layers["layer"]))
    norm = shared_norm(layers["share"].to_numpy(float))
    fig, axes = figure(8.0, 1.4 + (0.9 + 0.16 * len(order)) * len(metrics), rows=len(metrics))
    images = []
    labels = layer_labels(order)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    for ax, metric in zip(axes[:, 0], metrics):
        pivot = layers[layers["metric"] == metric].pivot(index="layer", columns="step", values="share").reindex(order)
        values = np.ma.masked_less_equal(pivot.to_numpy(float), 0.0)  # a zero share has no log colour: grey
        images.append(ax.imshow(values, aspect="auto", cmap=cmap, interpolation="nearest", norm=norm))
        ax.set_yticks(range(len(order)), labels, fontsize=6)
        steps = pivot.columns.to_list()
        ticks = np.arange(len(steps)) if len(steps) <= 8 else np.linspace(0, len(steps) - 1, 6).astype(int)
        ax.set_xticks(ticks, [f"{steps[i]:,}" for i in ticks], fontsize=7)
        ax.set_title(f"{metric}: share of importance per layer (mean channel score / sum over layers)", fontsize=8)
    axes[-1, 0].set_xlabel(f"{step_unit} (snapshot)")
    fig.colorbar(images[0], ax=list(axes[:, 0]), fraction=0.03,
                 label="share of importance (log colour scale, the same for every panel; grey: 0)")
    fig.text(0.01, 0.005, LAYER_NOTE.replace("`", ""), fontsize=5.5, ha="left", va="bottom", wrap=True)
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.3, right=0.86, top=1 - 0.35 / height, bottom=1.0 / height, hspace=0.55)
    return fig, images


def plot_importance(key: str, layers: pd.DataFrame, out: Path, step_unit: str = UPDATES) -> list[Path]:
    """``importance_<key>.{png,svg}`` from :func:`layer_importance` rows (averaged over runs)."""
    fig, _ = importance_figure(key, layers, step_unit)
    return [] if fig is None else save(fig, out, f"importance_{slug(key)}")


def plot_run_importance(path: str | Path, out: str | Path, metrics: Sequence[str] | None = None,
                        key: str = "run") -> list[Path]:
    """The heat-maps of one run's ``importance.parquet`` (``metrics``: only these; ``None``: all) as
    ``out/importance_<key>.png|svg``; ``[]`` when the file holds no snapshot of those metrics.

    Used by train and prune runs to log their importance heat-maps to W&B (x-axis in updates)."""
    table = read_importance(Path(path))
    if metrics is not None:
        table = table[table["metric"].isin(list(metrics))]
    if table.empty:
        return []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return plot_importance(key, layer_importance(table), out)


def rank_correlation_figure(key: str, corr: pd.DataFrame, step_unit: str = UPDATES):
    """Spearman's rho vs step, a line (± std over runs) per pair of metrics; returns the Figure."""
    fig, axes = figure(7.5, 4.2)
    ax = axes[0, 0]
    for k, ((a, b), c) in enumerate(corr.groupby(["metric_a", "metric_b"], sort=True)):
        color = f"C{k % 10}"
        ax.plot(c["step"], c["spearman"], label=f"{a}–{b}", lw=1, color=color,
                ls="-" if k < 10 else "--" if k < 20 else ":")
        if (c["runs"] > 1).any():
            ax.fill_between(c["step"], c["spearman"] - c["spearman_std"], c["spearman"] + c["spearman_std"],
                            color=color, alpha=0.12, lw=0)
    ax.set_xlabel(step_unit)
    ax.set_ylabel("Spearman ρ of channel scores (within layers)")
    ax.set_ylim(-1.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=3)
    ax.set_title(f"agreement between metrics over training ({key}, n = {int(corr['runs'].max())} run(s))", fontsize=9)
    fig.tight_layout()
    return fig


def plot_rank_correlations(key: str, corr: pd.DataFrame, out: Path, step_unit: str = UPDATES) -> list[Path]:
    if corr.empty:
        return []
    return save(rank_correlation_figure(key, corr, step_unit), out, f"rank_correlation_{slug(key)}")


def _std_or_zero(x: pd.Series) -> float:
    x = x.dropna()
    return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0


def _step_unit(runs: Sequence[ImportanceRun]) -> str:
    """The axis label of a key's steps: env steps (with the runs' env steps per update) or updates."""
    factors = sorted({round(r.env_steps_per_update, 3) for r in runs if r.env_steps_per_update})
    if not factors or any(not r.env_steps_per_update for r in runs):
        return UPDATES
    return f"{ENV_STEPS} (updates × {' / '.join(f'{f:g}' for f in factors)})"


def _in_env_steps(table: pd.DataFrame, run: ImportanceRun) -> pd.DataFrame:
    if not run.env_steps_per_update:
        return table
    return table.assign(step=np.rint(table["step"].to_numpy(float) * run.env_steps_per_update).astype(np.int64))


def importance_report(runs: Sequence[ImportanceRun], out: Path) -> tuple[dict[str, pd.DataFrame], list[dict], list[Path]]:
    """Heat-maps and rank correlations per task (runs averaged): ``(correlations by key, failures, plots)``.

    Reads one file at a time (a long run holds millions of rows) and keeps only the aggregates. Steps are
    env steps when every run of the key has its ``env_steps_per_update``, else updates.
    """
    layers: dict[str, list[pd.DataFrame]] = {}
    corrs: dict[str, list[pd.DataFrame]] = {}
    failures, paths = [], []
    runs_by_key: dict[str, list[ImportanceRun]] = {}
    for run in runs:
        runs_by_key.setdefault(run.key, []).append(run)
    for key, group in runs_by_key.items():
        env_steps = all(r.env_steps_per_update for r in group)
        for run in group:
            try:
                table = read_importance(run.path)
            except ValueError as err:
                failures.append(failure(run.path.parent, "UnreadableImportance", str(err)))
                continue
            if table.empty:
                continue
            table = _in_env_steps(table, run) if env_steps else table
            layers.setdefault(key, []).append(layer_importance(table).assign(run=run.name))
            corrs.setdefault(key, []).append(rank_correlations(table).assign(run=run.name))
    correlations = {}
    for key in layers:
        unit = _step_unit(runs_by_key[key])
        lay = pd.concat(layers[key]).groupby(["metric", "component", "layer", "step"], sort=False)[["score", "share"]]
        lay = lay.mean().reset_index()
        lay.to_csv(out / f"importance_{slug(key)}.csv", index=False)
        paths += plot_importance(key, lay, out, unit)
        c = pd.concat(corrs[key]).groupby(["metric_a", "metric_b", "step"], sort=True)["spearman"]
        c = c.agg(spearman="mean", spearman_std=_std_or_zero, runs="count").reset_index()
        c = c[["step", "metric_a", "metric_b", "spearman", "spearman_std", "runs"]]
        c.to_csv(out / f"rank_correlation_{slug(key)}.csv", index=False)
        paths += plot_rank_correlations(key, c, out, unit)
        correlations[key] = c
    return correlations, failures, paths
