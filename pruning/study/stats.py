r"""Field-standard statistics of a pruning sweep (Agarwal et al., NeurIPS 2021, with ``rliable``).

A **run** is one (agent, fine-tuning seed) pair of one task, an agent being one training run (its
checkpoint: two training runs with the same seed are two agents); its score at a budget is the
**retained return**: 100 × the pruned agent's eval return / the eval return of the *same* agent's dense
reference (``ratio=0``) after the same fine-tuning with the same seed. Where that reference is missing,
the mean of the agent's dense references over its other fine-tuning seeds is used (said in ``summary.md``);
where the agent has none (its dense jobs failed), the run has no retained return (left out and said so).
Only a table without any dense reference job (a sweep run without ``ratio=0``) is scored against the
training runs' final returns (``dense_return``, not fine-tuned), and ``summary.md`` says so.

Per task-set and budget (``ratio``), for every metric:

- **IQM** of the retained return over all runs (interquartile mean, the mean of the middle 50 %) with a
  95 % **stratified-bootstrap** confidence interval (runs resampled within each task);
- **probability of improvement** :math:`P(X > Y)` of each gradient metric over each baseline (the
  Mann-Whitney U statistic over runs, averaged over tasks) with its bootstrap CI;
- a **performance profile**: the fraction of runs whose retained return exceeds :math:`\tau`.

Per metric, one number over all budgets: the **area under the retained-return-vs-FLOPs curve** of each
run (trapezoid over the fraction of planned-action FLOPs kept, linear between its points, dense at 100 %,
over the range every run of the task covers, up to 1, divided by the width of that range: the mean retained
return over the FLOPs range; :func:`auc_table`), its mean over runs with a bootstrap CI.

What cannot be compared is left out and said so in ``summary.md`` (never silently pooled, never fatal): a
task whose dense reference return is not positive (a ratio to it would rank a worse return higher, e.g.
``Pendulum-v1``, whose rewards are negative: its retained return is undefined); a run whose return is
missing; a metric without runs on one of the tasks at a budget; for the area, a run that lacks one of its
task's budgets (its curve would cover an easier FLOPs range) or whose FLOPs are unknown. Each metric is
scored over its own runs (the stratified bootstrap resamples runs within each task, so a metric's matrix
needs the same number of runs on every task, not the same runs as another metric's; where one task has more
runs of a metric than another, the extra runs, last by agent and seed, are left out and said so). With one
run per task a bootstrap has zero width, so no CI is shown then.

rliable does the bootstrap; nothing of it is re-implemented here. CIs use ``REPS`` bootstrap samples
(fewer than rliable's default 50 000 so that a report stays fast; seeded, so reports are reproducible).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from pruning.study.collect import agent_column
from pruning.study.variants import base_metric

REPS = 2000
SEED = 0
GRADIENT_METRICS = ("grad_acc", "fisher", "bayes")
RUN_KEYS = ("train_seed", "agent", "seed")

#: How a pruned job's dense reference was found (column ``reference`` of :func:`retained_returns`).
REFERENCES = ("same seed", "agent mean", "training return", "missing")


def retained_returns(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` (one row per prune job) with a ``retained`` column (see the module doc); dense rows dropped.

    Jobs are matched to their reference by task, agent (training seed and source checkpoint, column
    ``agent``), fine-tuning steps and fine-tuning seed; ``reference`` says which of :data:`REFERENCES` was
    used. A reference that is not positive leaves ``retained`` undefined (NaN, see the module doc).
    """
    df = results.copy()
    df["train_seed"] = df["train_seed"].fillna(-1) if "train_seed" in df else -1
    df["agent"] = agent_column(df)
    keys = ["task", "train_seed", "agent", "finetune_steps"]
    dense = df[df["ratio"] == 0]
    exact = dense.groupby([*keys, "seed"])["return_mean"].mean().rename("ref_exact")
    agent = dense.groupby(keys)["return_mean"].mean().rename("ref_agent")
    df = df.join(exact, on=[*keys, "seed"]).join(agent, on=keys)
    budget = ["task", "finetune_steps"]  # no dense job of this task and fine-tuning in the whole table:
    none = ~pd.MultiIndex.from_frame(df[budget]).isin(pd.MultiIndex.from_frame(dense[budget]))
    ref = df["ref_exact"].fillna(df["ref_agent"]).where(~none, df["dense_return"])
    df["reference"] = np.select([df["ref_exact"].notna(), df["ref_agent"].notna(), none & ref.notna()],
                                list(REFERENCES[:3]), REFERENCES[3])
    df["retained"] = 100.0 * df["return_mean"] / ref.where(ref > 0)
    df["flops_kept"] = df["flops_plan"] / df["flops_plan_dense"] if "flops_plan_dense" in df else np.nan
    return df[df["ratio"] > 0].drop(columns=["ref_exact", "ref_agent"])


def reference_notes(df: pd.DataFrame) -> list[str]:
    """``summary.md`` notes on jobs not scored against their own seed's dense reference (``reference`` of
    :func:`retained_returns`), and on training seeds with several agents (checkpoints)."""
    if "reference" not in df:
        return []
    notes = []
    for task, t in df.groupby("task"):
        n = t["reference"].value_counts()
        if n.get("agent mean"):
            notes.append(f"task {task}: {n['agent mean']} job(s) scored against the mean of their agent's dense "
                         f"references over other fine-tuning seeds (their own seed's dense job is missing or failed)")
        if n.get("training return"):
            notes.append(f"task {task}: no dense reference job (ratio=0) in these results; {n['training return']} "
                         f"job(s) scored against the training run's final return, which was not fine-tuned")
        if n.get("missing"):
            notes.append(f"task {task}: {n['missing']} job(s) of agents without any dense reference job (failed or "
                         f"missing): no retained return; left out of the statistics")
        agents = t.groupby("train_seed")["agent"].nunique()
        for seed, k in agents[agents > 1].items():
            notes.append(f"task {task}: training seed {seed:g} has {k} checkpoints (separate training runs): their jobs "
                         f"count as separate runs")
    return notes


def score_matrices(df: pd.DataFrame, value: str = "retained") -> tuple[dict[str, np.ndarray], dict[str, int],
                                                                   list[str], list[str]]:
    """``({metric: (runs, tasks) array}, {metric: runs per task}, metrics left out, notes)`` of ``value`` for
    rliable.

    Each metric is scored over its own runs: a run whose ``value`` is missing (NaN) does not count, a metric
    without runs on one of the tasks is left out (and returned), and where the tasks have different numbers of
    runs of a metric, every task keeps as many as the fewest (the first by agent and seed; the others are left
    out, and a note says so). Jobs that repeat a run (same task, agent, seed and metric label) are averaged.
    """
    df = df[np.isfinite(pd.to_numeric(df[value], errors="coerce").astype(float))]
    tasks = sorted(df["task"].unique())
    metrics = list(dict.fromkeys(df["metric"]))
    means = df.groupby(["metric", "task", *RUN_KEYS])[value].mean()
    out, counts, left, notes = {}, {}, [], []
    for metric in metrics:
        per_task = {t: means.loc[(metric, t)] for t in tasks if (metric, t) in means.index.droplevel(list(RUN_KEYS))}
        if len(per_task) < len(tasks):
            left.append(metric)
            continue
        n = min(len(v) for v in per_task.values())
        for t, v in per_task.items():
            if len(v) > n:
                notes.append(f"{metric}, task {t}: {len(v) - n} of its {len(v)} runs left out (every task needs as "
                             f"many runs as the fewest, {n}, for the stratified bootstrap)")
        out[metric] = np.array([[float(per_task[t].sort_index().iloc[r]) for t in tasks] for r in range(n)]
                               ).reshape(n, len(tasks))
        counts[metric] = n
    return out, counts, left, notes


def _left_out(ratio: float | None, metrics: Sequence[str]) -> list[str]:
    where = "" if ratio is None else f" at ratio {ratio:g}"
    return [f"{m}{where}: left out of the statistics, it has no run on every task" for m in metrics]


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


def _interval(scores: dict, func, n: dict) -> tuple[dict, dict]:
    """rliable's point estimates and 95 % CIs of ``func`` per key of ``scores``; where ``n[key]`` < 2 runs per
    task only the point (CI NaN: the stratified bootstrap of one run per task has zero width)."""
    import warnings

    from absl import logging as absl_logging  # rliable logs one INFO line per estimate
    from rliable import library as rly

    few = {k for k in scores if n[k] < 2}
    point = {k: np.atleast_1d(func(*scores[k]) if isinstance(scores[k], tuple) else func(scores[k])) for k in few}
    ci = {k: np.full((2, len(point[k])), np.nan) for k in few}
    rest = {k: v for k, v in scores.items() if k not in few}
    if rest:
        absl_logging.set_verbosity(absl_logging.WARNING)
        with warnings.catch_warnings(), seeded_global_rng():  # arch warns that a RandomState is deprecated
            warnings.simplefilter("ignore", FutureWarning)
            p, c = rly.get_interval_estimates(rest, func, reps=REPS, random_state=np.random.RandomState(SEED))
        point.update(p)
        ci.update(c)
    return point, ci


def iqm_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per ratio and metric: IQM of the retained return with its 95 % CI and n (runs per task x tasks).
    ``attrs["notes"]``: what was left out (see :func:`score_matrices`)."""
    from rliable import metrics as rm

    rows, notes = [], []
    for ratio, g in df.groupby("ratio"):
        scores, n, left, dropped = score_matrices(g)
        notes += _left_out(ratio, left) + [f"{d} at ratio {ratio:g}" for d in dropped]
        if not scores:
            continue
        point, ci = _interval(scores, lambda x: np.array([rm.aggregate_iqm(x)]), n)
        for metric in scores:
            rows.append({"ratio": ratio, "metric": metric, "n": n[metric] * scores[metric].shape[1],
                         "iqm": float(point[metric][0]), "ci_low": float(np.ravel(ci[metric][0])[0]),
                         "ci_high": float(np.ravel(ci[metric][1])[0])})
    out = pd.DataFrame(rows, columns=["ratio", "metric", "n", "iqm", "ci_low", "ci_high"])
    out.attrs["notes"] = notes
    return out


def improvement_table(df: pd.DataFrame, gradient: Sequence[str] = GRADIENT_METRICS) -> pd.DataFrame:
    """Per ratio: P(gradient metric > baseline) with its 95 % CI, for every gradient metric and baseline
    (metric labels of :func:`pruning.study.variants.label_variants` count by their metric name)."""
    from rliable import metrics as rm

    rows = []
    for ratio, g in df.groupby("ratio"):
        scores, n, _, _ = score_matrices(g)
        pairs = {(a, b): (scores[a], scores[b]) for a in scores if base_metric(a) in gradient
                 for b in scores if base_metric(b) not in gradient}
        if not pairs:
            continue
        keys = {f"{i}": pair for i, pair in enumerate(pairs)}  # rliable wants string keys without our labels' commas
        point, ci = _interval({k: pairs[p] for k, p in keys.items()}, rm.probability_of_improvement,
                              {k: min(n[a], n[b]) for k, (a, b) in keys.items()})
        for k, (a, b) in keys.items():
            lo, hi = np.ravel(ci[k])
            rows.append({"ratio": ratio, "metric": a, "baseline": b, "n": min(n[a], n[b]),
                         "p_improve": float(np.ravel(point[k])[0]), "ci_low": float(lo), "ci_high": float(hi)})
    return pd.DataFrame(rows, columns=["ratio", "metric", "baseline", "n", "p_improve", "ci_low", "ci_high"])


def run_auc(g: pd.DataFrame, low: float | None = None) -> float:
    """Area under one run's retained-return-vs-FLOPs-kept curve, dense (1, 100) included, over the FLOPs
    range ``[low, 1]`` (default: from the run's smallest kept fraction), divided by the range's width: the
    mean retained return over the range. The curve is linear between its points (the value at ``low`` is
    interpolated); NaN when it does not reach down to ``low``."""
    x = np.concatenate([g["flops_kept"].to_numpy(float), [1.0]])
    y = np.concatenate([g["retained"].to_numpy(float), [100.0]])
    order = np.argsort(x)
    x, y = x[order], y[order]
    low = x[0] if low is None else low
    if not (np.isfinite(x).all() and np.isfinite(y).all()) or x[0] > low + 1e-9 or low >= 1.0:
        return float("nan")
    above = x > low
    xs = np.concatenate([[low], x[above]])
    ys = np.concatenate([[np.interp(low, x, y)], y[above]])
    return float(np.trapezoid(ys, xs) / (1.0 - low))


def auc_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per metric: mean over runs of :func:`run_auc` with a 95 % stratified-bootstrap CI.

    Curves are compared over one FLOPs range per task, ``[low, 1]`` with ``low`` the largest of the runs'
    smallest kept fractions (every curve reaches it; with ``budget=flops`` all runs end within 1 % of one
    another). A run without a job at one of its task's ratios has no area (its curve would cover an easier
    range), nor has one with a missing return; ``attrs["notes"]`` says how many runs were left out."""
    from rliable import metrics as rm

    cols = ["metric", "n", "auc", "ci_low", "ci_high"]
    df = df[np.isfinite(pd.to_numeric(df["retained"], errors="coerce").astype(float))]
    rows, incomplete = [], 0
    for task, t in df.groupby("task"):
        ratios = set(t["ratio"])
        # repeated jobs of a run at one ratio are averaged first, as in the IQM (np.interp would pick one)
        runs = {key: g.groupby("ratio")[["flops_kept", "retained"]].mean()
                for key, g in t.groupby(["metric", *RUN_KEYS])}
        complete = {key: g for key, g in runs.items() if set(g.index) >= ratios}
        incomplete += len(runs) - len(complete)
        lows = [v for v in (g["flops_kept"].min() for g in complete.values()) if np.isfinite(v)]
        low = max(lows) if lows else np.nan  # (a run without FLOPs has no area; it must not void the others')
        for (metric, *run), g in complete.items():
            rows.append({"task": task, "metric": metric, **dict(zip(RUN_KEYS, run)), "auc": run_auc(g, low)})
    per_run = pd.DataFrame(rows, columns=["task", "metric", *RUN_KEYS, "auc"])
    unknown = int(per_run["auc"].isna().sum())
    scores, n, left, dropped = score_matrices(per_run, "auc")
    notes = _left_out(None, left) + [f"{d} (area)" for d in dropped]
    if incomplete:
        notes.append(f"{incomplete} run(s) without a job at every ratio of their task: left out of the area")
    if unknown:
        notes.append(f"{unknown} run(s) without an area (their planned-action FLOPs, or the dense FLOPs, are "
                     f"unknown): left out of the area")
    if not scores:
        out = pd.DataFrame(columns=cols)
    else:
        point, ci = _interval(scores, lambda x: np.array([rm.aggregate_mean(x)]), n)
        out = pd.DataFrame([{"metric": m, "n": n[m] * scores[m].shape[1], "auc": float(point[m][0]),
                             "ci_low": float(np.ravel(ci[m][0])[0]), "ci_high": float(np.ravel(ci[m][1])[0])}
                            for m in scores], columns=cols)
    out.attrs["notes"] = notes
    return out


TAUS = np.linspace(0, 120, 61)  # retained-return thresholds of the performance profiles (% of dense)


def performance_profile_figure(df: pd.DataFrame):
    """One panel per ratio: fraction of runs with retained return > tau, per metric, with CI bands (none
    with one run per task); the Figure (``None`` without ratios). A metric has one colour in every panel."""
    from rliable import library as rly

    from pruning.study.plots import figure

    ratios = sorted(df["ratio"].unique())
    if not ratios:
        return None
    colour = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(df["metric"]))}
    fig, axes = figure(4.2 * len(ratios), 3.4, cols=len(ratios), sharey=True)
    handles = {}
    for ax, ratio in zip(axes[0], ratios):
        scores, n, _, _ = score_matrices(df[df["ratio"] == ratio])
        if not scores:
            continue
        with seeded_global_rng():
            prof, cis = rly.create_performance_profile(scores, TAUS, reps=REPS)
        for metric in scores:
            gradient = base_metric(metric) in GRADIENT_METRICS
            handles[metric], = ax.plot(TAUS, prof[metric], label=metric, color=colour[metric],
                                       lw=1.6 if gradient else 1.0, ls="-" if gradient else "--")
            if n[metric] >= 2:
                ax.fill_between(TAUS, cis[metric][0], cis[metric][1], color=colour[metric], alpha=0.15)
        runs = sorted({n[m] * scores[m].shape[1] for m in scores})
        ax.set_title(f"ratio {ratio:g} (n = {'-'.join(map(str, runs))} runs)")
        ax.set_xlabel("retained return τ (% of dense)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of runs > τ")
    if handles:
        order = [m for m in colour if m in handles]
        axes[0][-1].legend([handles[m] for m in order], order, fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def plot_performance_profiles(df: pd.DataFrame, out, stem: str = "performance_profile") -> list:
    """:func:`performance_profile_figure` as ``out/<stem>.{png,svg}``."""
    from pruning.study.plots import save

    fig = performance_profile_figure(df)
    return [] if fig is None else save(fig, out, stem)


def _ci(v: float, lo: float, hi: float, digits: int = 1) -> str:
    if np.isnan(lo) or np.isnan(hi):
        return f"{v:.{digits}f} (no CI)"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _undefined_notes(df: pd.DataFrame) -> list[str]:
    """Tasks and runs whose retained return is undefined (see the module doc)."""
    notes = []
    if "reference" in df:  # jobs without any dense reference have their own note (reference_notes)
        df = df[df["reference"] != "missing"]
    finite = np.isfinite(pd.to_numeric(df["retained"], errors="coerce").astype(float))
    for task, ok in finite.groupby(df["task"]):
        if not ok.any():
            notes.append(f"task {task}: retained return undefined (its dense reference return is missing or not "
                         f"positive, so a ratio to it would rank a worse return higher); left out of the statistics")
        elif not ok.all():
            notes.append(f"task {task}: {int((~ok).sum())} job(s) without a retained return (return or dense "
                         f"reference missing or not positive); left out of the statistics")
    return notes


def statistics_markdown(df: pd.DataFrame, title: str) -> list[str]:
    """``summary.md`` lines for one table of runs (see the module doc): IQM, P(improvement), AUC, and what was
    left out. Every row of a table has a cell for every column's metric ("–": no value at that ratio)."""
    iqm, poi, auc = iqm_table(df), improvement_table(df), auc_table(df)
    what = "planned-action FLOPs removed" if "budget" in df and (df["budget"] == "flops").all() else "channels removed"
    metrics = list(dict.fromkeys(iqm["metric"]))
    lines = [f"### Statistics: {title}", "",
             f"Retained return (% of the same agent's dense return after the same fine-tuning). IQM with 95 % "
             f"stratified-bootstrap CI ({REPS} resamples, rliable); ratio = fraction of {what}.", ""]
    if len(iqm) and (iqm["ci_low"].isna()).any():
        lines += ["A figure marked \"no CI\" has one run per task (a bootstrap of one run has zero width): it is "
                  "a single comparison, not an estimate.", ""]
    if metrics:
        lines += ["| ratio | " + " | ".join(metrics) + " |", "|---:|" + "---:|" * len(metrics)]
    for ratio, g in iqm.groupby("ratio"):
        by, best = g.set_index("metric"), g["iqm"].max()
        same_n = g["n"].nunique() == 1  # else each cell says its own n
        cells = []
        for m in metrics:
            if m not in by.index:
                cells.append("–")
                continue
            r = by.loc[m]
            text = _ci(r["iqm"], r["ci_low"], r["ci_high"]) + ("" if same_n else f" (n = {int(r['n'])})")
            cells.append(f"**{text}**" if r["iqm"] == best else text)
        label = f"{ratio:g} (n = {int(g['n'].iloc[0])})" if same_n else f"{ratio:g}"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    if len(poi):
        baselines = list(dict.fromkeys(poi["baseline"]))
        lines += ["Probability that a gradient metric's retained return beats a baseline's, P(X > Y) [95 % CI]; "
                  "0.5 = no difference.", "", "| ratio | X | " + " | ".join(baselines) + " |",
                  "|---:|---|" + "---:|" * len(baselines)]
        for (ratio, metric), g in poi.groupby(["ratio", "metric"], sort=False):
            by = g.set_index("baseline")
            cells = [_ci(by.loc[b, "p_improve"], by.loc[b, "ci_low"], by.loc[b, "ci_high"], 2) if b in by.index
                     else "–" for b in baselines]
            lines.append(f"| {ratio:g} | {metric} | " + " | ".join(cells) + " |")
        lines.append("")
    if len(auc):
        lines += ["Area under the retained-return-vs-FLOPs-kept curve (mean retained % over the FLOPs range every "
                  "run of the task covers, dense included), mean over runs [95 % CI]:", "", "| metric | n | AUC |",
                  "|---|---:|---:|"]
        for r in auc.sort_values("auc", ascending=False).itertuples():
            lines.append(f"| {r.metric} | {r.n} | {_ci(r.auc, r.ci_low, r.ci_high)} |")
        lines.append("")
    notes = (reference_notes(df) + _undefined_notes(df) + iqm.attrs.get("notes", [])
             + auc.attrs.get("notes", []))
    if notes:
        lines += [f"Left out: {n}." for n in notes] + [""]
    return lines
