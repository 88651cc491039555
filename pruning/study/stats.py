r"""Field-standard statistics of a pruning sweep (Agarwal et al., NeurIPS 2021, with ``rliable``).

A **run** is one (training seed, fine-tuning seed) pair of one task; its score at a budget is the
**retained return**: 100 × the pruned agent's eval return / the eval return of the *same* agent's dense
reference (``ratio=0``) after the same fine-tuning with the same seed. Where that reference is missing,
the mean of the agent's dense references over fine-tuning seeds is used, and failing that the training
run's final return (``dense_return``).

Per task-set and budget (``ratio``), for every metric:

- **IQM** of the retained return over all runs (interquartile mean, the mean of the middle 50 %) with a
  95 % **stratified-bootstrap** confidence interval (runs resampled within each task);
- **probability of improvement** :math:`P(X > Y)` of each gradient metric over each baseline (the
  Mann-Whitney U statistic over runs, averaged over tasks) with its bootstrap CI;
- a **performance profile**: the fraction of runs whose retained return exceeds :math:`\tau`.

Per metric, one number over all budgets: the **area under the retained-return-vs-FLOPs curve** of each
run (trapezoid over the fraction of planned-action FLOPs kept, from the smallest kept fraction to 1 =
dense at 100 %, divided by the width of that range: the mean retained return over the FLOPs range), its
mean over runs with a bootstrap CI.

rliable does the bootstrap; nothing of it is re-implemented here. CIs use ``REPS`` bootstrap samples
(fewer than rliable's default 50 000 so that a report stays fast; seeded, so reports are reproducible).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

REPS = 2000
SEED = 0
GRADIENT_METRICS = ("grad_acc", "fisher", "bayes")
RUN_KEYS = ("train_seed", "seed")


def retained_returns(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` (one row per prune job) with a ``retained`` column (see the module doc); dense rows dropped.

    Jobs are matched to their reference by task, training seed, fine-tuning seed and fine-tuning steps.
    """
    df = results.copy()
    df["train_seed"] = df["train_seed"].fillna(-1) if "train_seed" in df else -1
    keys = ["task", "train_seed", "finetune_steps"]
    dense = df[df["ratio"] == 0]
    exact = dense.groupby([*keys, "seed"])["return_mean"].mean().rename("ref_exact")
    agent = dense.groupby(keys)["return_mean"].mean().rename("ref_agent")
    df = df.join(exact, on=[*keys, "seed"]).join(agent, on=keys)
    ref = df["ref_exact"].fillna(df["ref_agent"]).fillna(df["dense_return"])
    df["retained"] = 100.0 * df["return_mean"] / ref.where(ref.abs() > 1e-12)
    df["flops_kept"] = df["flops_plan"] / df["flops_plan_dense"] if "flops_plan_dense" in df else np.nan
    return df[df["ratio"] > 0].drop(columns=["ref_exact", "ref_agent"])


def score_matrices(df: pd.DataFrame, value: str = "retained") -> tuple[dict[str, np.ndarray], int]:
    """``{metric: (runs, tasks) array}`` of ``value`` for rliable, and the number of runs per task used.

    Every metric and task must have the same runs for stratified resampling: the runs common to all are
    used (their count is returned).
    """
    tasks = sorted(df["task"].unique())
    metrics = list(dict.fromkeys(df["metric"]))
    runs = None
    for _, g in df.groupby(["task", "metric"]):
        r = set(map(tuple, g[list(RUN_KEYS)].to_numpy().tolist()))
        runs = r if runs is None else runs & r
    runs = sorted(runs or [])
    out = {}
    for metric in metrics:
        m = df[df["metric"] == metric].set_index(["task", *RUN_KEYS])[value]
        out[metric] = np.array([[float(m.loc[(task, *run)]) for task in tasks] for run in runs]).reshape(len(runs),
                                                                                                         len(tasks))
    return out, len(runs)


@contextlib.contextmanager
def seeded_global_rng(seed: int = SEED):
    """numpy's global RNG seeded with ``seed`` inside the block, restored after it. rliable's stratified
    bootstraps draw their resamples with ``np.random.choice`` (the global RNG), not from the
    ``random_state`` they are given, so without this a report's CIs change from run to run."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _interval(scores: dict, func) -> tuple[dict, dict]:
    import warnings

    from absl import logging as absl_logging  # rliable logs one INFO line per estimate
    from rliable import library as rly

    absl_logging.set_verbosity(absl_logging.WARNING)
    with warnings.catch_warnings(), seeded_global_rng():  # arch warns that a RandomState is deprecated
        warnings.simplefilter("ignore", FutureWarning)
        return rly.get_interval_estimates(scores, func, reps=REPS, random_state=np.random.RandomState(SEED))


def iqm_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per ratio and metric: IQM of the retained return with its 95 % CI and n (runs per task x tasks)."""
    from rliable import metrics as rm

    rows = []
    for ratio, g in df.groupby("ratio"):
        scores, n = score_matrices(g)
        if n == 0:
            continue
        point, ci = _interval(scores, lambda x: np.array([rm.aggregate_iqm(x)]))
        for metric in scores:
            rows.append({"ratio": ratio, "metric": metric, "n": n * scores[metric].shape[1],
                         "iqm": float(point[metric][0]), "ci_low": float(ci[metric][0][0]),
                         "ci_high": float(ci[metric][1][0])})
    return pd.DataFrame(rows, columns=["ratio", "metric", "n", "iqm", "ci_low", "ci_high"])


def improvement_table(df: pd.DataFrame, gradient: Sequence[str] = GRADIENT_METRICS) -> pd.DataFrame:
    """Per ratio: P(gradient metric > baseline) with its 95 % CI, for every gradient metric and baseline."""
    from rliable import metrics as rm

    rows = []
    for ratio, g in df.groupby("ratio"):
        scores, n = score_matrices(g)
        pairs = {f"{a},{b}": (scores[a], scores[b]) for a in gradient if a in scores
                 for b in scores if b not in gradient}
        if n == 0 or not pairs:
            continue
        point, ci = _interval(pairs, rm.probability_of_improvement)
        for key in pairs:
            a, b = key.split(",")
            lo, hi = np.ravel(ci[key])
            rows.append({"ratio": ratio, "metric": a, "baseline": b, "n": n, "p_improve": float(np.ravel(point[key])[0]),
                         "ci_low": float(lo), "ci_high": float(hi)})
    return pd.DataFrame(rows, columns=["ratio", "metric", "baseline", "n", "p_improve", "ci_low", "ci_high"])


def run_auc(g: pd.DataFrame) -> float:
    """Area under one run's retained-return-vs-FLOPs-kept curve, dense (1, 100) included, divided by its
    FLOPs range: the mean retained return over the range."""
    x = np.concatenate([g["flops_kept"].to_numpy(float), [1.0]])
    y = np.concatenate([g["retained"].to_numpy(float), [100.0]])
    order = np.argsort(x)
    x, y = x[order], y[order]
    return float(np.trapezoid(y, x) / (x[-1] - x[0])) if x[-1] > x[0] else float("nan")


def auc_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per metric: mean over runs of :func:`run_auc` with a 95 % stratified-bootstrap CI."""
    from rliable import metrics as rm

    per_run = (df.groupby(["task", "metric", *RUN_KEYS]).apply(run_auc, include_groups=False)
               .rename("auc").reset_index())
    scores, n = score_matrices(per_run, "auc")
    if n == 0:
        return pd.DataFrame(columns=["metric", "n", "auc", "ci_low", "ci_high"])
    point, ci = _interval(scores, lambda x: np.array([rm.aggregate_mean(x)]))
    return pd.DataFrame([{"metric": m, "n": n * scores[m].shape[1], "auc": float(point[m][0]),
                          "ci_low": float(ci[m][0][0]), "ci_high": float(ci[m][1][0])} for m in scores])


TAUS = np.linspace(0, 120, 61)  # retained-return thresholds of the performance profiles (% of dense)


def performance_profile_figure(df: pd.DataFrame):
    """One panel per ratio: fraction of runs with retained return > tau, per metric, with CI bands; the
    Figure (``None`` without ratios)."""
    from rliable import library as rly

    from pruning.study.plots import figure

    ratios = sorted(df["ratio"].unique())
    if not ratios:
        return None
    fig, axes = figure(4.2 * len(ratios), 3.4, cols=len(ratios), sharey=True)
    for ax, ratio in zip(axes[0], ratios):
        scores, n = score_matrices(df[df["ratio"] == ratio])
        if n == 0:
            continue
        with seeded_global_rng():
            prof, cis = rly.create_performance_profile(scores, TAUS, reps=REPS)
        for metric in scores:
            line, = ax.plot(TAUS, prof[metric], label=metric, lw=1.6 if metric in GRADIENT_METRICS else 1.0,
                            ls="-" if metric in GRADIENT_METRICS else "--")
            ax.fill_between(TAUS, cis[metric][0], cis[metric][1], color=line.get_color(), alpha=0.15)
        ax.set_title(f"ratio {ratio:g} (n = {n * next(iter(scores.values())).shape[1]} runs)")
        ax.set_xlabel("retained return τ (% of dense)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of runs > τ")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def plot_performance_profiles(df: pd.DataFrame, out, stem: str = "performance_profile") -> list:
    """:func:`performance_profile_figure` as ``out/<stem>.{png,svg}``."""
    from pruning.study.plots import save

    fig = performance_profile_figure(df)
    return [] if fig is None else save(fig, out, stem)


def _ci(v: float, lo: float, hi: float, digits: int = 1) -> str:
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def statistics_markdown(df: pd.DataFrame, title: str) -> list[str]:
    """``summary.md`` lines for one table of runs (see the module doc): IQM, P(improvement), AUC."""
    iqm, poi, auc = iqm_table(df), improvement_table(df), auc_table(df)
    what = "planned-action FLOPs removed" if (df.get("budget") == "flops").all() else "channels removed"
    lines = [f"### Statistics: {title}", "",
             f"Retained return (% of the same agent's dense return after the same fine-tuning). IQM with 95 % "
             f"stratified-bootstrap CI ({REPS} resamples, rliable); ratio = fraction of {what}.", "",
             "| ratio | " + " | ".join(dict.fromkeys(iqm["metric"])) + " |",
             "|---:|" + "---:|" * iqm["metric"].nunique()]
    for ratio, g in iqm.groupby("ratio"):
        best = g["iqm"].max()
        cells = [("**" if r.iqm == best else "") + _ci(r.iqm, r.ci_low, r.ci_high) + ("**" if r.iqm == best else "")
                 for r in g.itertuples()]
        lines.append(f"| {ratio:g} (n = {int(g['n'].iloc[0])}) | " + " | ".join(cells) + " |")
    lines.append("")
    if len(poi):
        lines += ["Probability that a gradient metric's retained return beats a baseline's, P(X > Y) [95 % CI]; "
                  "0.5 = no difference.", "", "| ratio | X | " + " | ".join(dict.fromkeys(poi["baseline"])) + " |",
                  "|---:|---|" + "---:|" * poi["baseline"].nunique()]
        for (ratio, metric), g in poi.groupby(["ratio", "metric"], sort=False):
            cells = [_ci(r.p_improve, r.ci_low, r.ci_high, 2) for r in g.itertuples()]
            lines.append(f"| {ratio:g} | {metric} | " + " | ".join(cells) + " |")
        lines.append("")
    if len(auc):
        lines += ["Area under the retained-return-vs-FLOPs-kept curve (mean retained % over the FLOPs range, dense "
                  "included), mean over runs [95 % CI]:", "", "| metric | n | AUC |", "|---|---:|---:|"]
        for r in auc.sort_values("auc", ascending=False).itertuples():
            lines.append(f"| {r.metric} | {r.n} | {_ci(r.auc, r.ci_low, r.ci_high)} |")
        lines.append("")
    return lines
