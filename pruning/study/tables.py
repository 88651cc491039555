"""The sweep's tables: the summary per task x budget x scope x fine-tuning steps x metric x ratio, as
``summary.md`` / a terminal table, and the warnings about latencies that contradict the pruning.

Mean ± std (ddof 1) over seeds; a single run shows its value alone (the spread of one run is unknown, not 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pruning.study.collect import agent_column

SUMMARY_KEYS = ("task", "budget", "scope", "finetune_steps")  # one table per combination
DENSE = "dense"  # metric label of the ratio-0 reference in the summary


def sample_std(x: pd.Series) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0


def with_budget(results: pd.DataFrame) -> pd.DataFrame:
    """A copy with a ``budget`` column; results written before budgets existed were channel ratios."""
    df = results.copy()
    df["budget"] = [b if isinstance(b, str) else "channels" for b in df.get("budget", [None] * len(df))]
    return df


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std (ddof 1) over seeds per task x scope x finetune_steps x metric x ratio.

    Ratio-0 jobs are pooled as metric ``dense`` (scope ``-``): the reference of ``retained_pct`` for the
    jobs of the same task and fine-tuning steps (``100 * return / mean dense return``); without one, the
    mean ``dense_return`` (the training run's final eval) of the jobs. ``best`` marks the metric with the
    highest mean return at each ratio (the FLOPs budget of a sweep) of a table. ``n`` counts the runs (agent
    and fine-tuning seed) with a return, a run's repeated jobs averaged first (the ratio-0 job of every metric
    of a seed is one dense run); ``retained_pct`` is undefined (NaN) where the reference is not positive (a task with negative
    returns, where a ratio would rank a worse return higher).
    """
    cols = ["task", "budget", "scope", "finetune_steps", "metric", "ratio", "n", "return_mean", "return_std",
            "retained_pct", "retained_pct_std", "params", "flops_plan", "latency_plan_ms", "flops_policy",
            "latency_policy_ms", "best"]
    if results.empty:
        return pd.DataFrame(columns=cols)
    df = with_budget(results)
    dense_rows = df["ratio"] == 0
    df.loc[dense_rows, "metric"] = DENSE
    df.loc[dense_rows, "scope"] = "-"
    df.loc[dense_rows, "budget"] = "-"
    ref = df[dense_rows].groupby(["task", "finetune_steps"])["return_mean"].mean().rename("ref")
    df = df.join(ref, on=["task", "finetune_steps"])
    df["ref"] = df["ref"].fillna(df.groupby(["task", "finetune_steps"])["dense_return"].transform("mean"))
    df["retained"] = 100.0 * df["return_mean"] / df["ref"].where(df["ref"] > 0)  # undefined for a reference <= 0
    # n counts runs, not jobs: repeated jobs of one run (the ratio-0 job of every metric of a seed, or a job run
    # again into another folder) are averaged into one run first, else they would shrink the std as seeds
    df = df.assign(_agent=agent_column(df), _train_seed=df["train_seed"].fillna(-1) if "train_seed" in df else -1)
    value_cols = ["return_mean", "retained", "params", "flops_plan", "latency_plan_ms", "flops_policy",
                  "latency_policy_ms"]
    df = df.groupby([*SUMMARY_KEYS, "metric", "ratio", "_agent", "_train_seed", "seed"], sort=False, dropna=False)[
        [c for c in value_cols if c in df]].mean().reset_index()
    g = df.groupby([*SUMMARY_KEYS, "metric", "ratio"], sort=True)
    s = g.agg(n=("return_mean", "count"), return_mean=("return_mean", "mean"), return_std=("return_mean", sample_std),
              retained_pct=("retained", "mean"), retained_pct_std=("retained", sample_std), params=("params", "mean"),
              flops_plan=("flops_plan", "mean"), latency_plan_ms=("latency_plan_ms", "mean"),
              flops_policy=("flops_policy", "mean"), latency_policy_ms=("latency_policy_ms", "mean")).reset_index()
    pruned = s[s["metric"] != DENSE]
    top = pruned.groupby([*SUMMARY_KEYS, "ratio"])["return_mean"].transform("max")
    s["best"] = False
    s.loc[pruned.index, "best"] = pruned["return_mean"] >= top  # ties: all best
    s = s.sort_values(["task", "finetune_steps", "ratio", "return_mean"], ascending=[True, True, True, False])
    return s.reset_index(drop=True)[cols]


def _fmt(v: float, digits: int = 1) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:,.{digits}f}"


def _pm(mean: float, std: float, n: int) -> str:
    """``mean ± std`` for n >= 2; a single run shows its value alone (a spread of one run is not 0)."""
    return f"{_fmt(mean)} ± {_fmt(std)}" if n >= 2 else _fmt(mean)


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


INTRO = ("Return: mean ± std over runs of the eval return (n runs; no spread is shown for n = 1); retained: % "
         "of the dense reference (ratio 0, same task and fine-tuning steps). FLOPs and latency: one planned "
         "action (MPPI) for a batch-1 observation. Budget `flops`: every metric removed the same fraction of "
         "the planned-action FLOPs, so rows of one ratio compare models of equal cost ({spread}); "
         "budget `channels`: the same fraction of channels, so their costs differ (see the FLOPs column). "
         "**Bold**: best metric at that ratio.")
FLOPS_TOLERANCE = 0.01  # budget=flops lands every metric within 1 % of the target (tests/test_cost_budget.py)


def flops_spread(summary: pd.DataFrame) -> float:
    """The largest relative difference ``(max - min) / max`` between the mean planned-action FLOPs of the
    metrics at one ratio of a ``budget=flops`` table (NaN without such rows): how equal "equal cost" is."""
    rows = summary[(summary["metric"] != DENSE) & (summary["budget"] == "flops")]
    spread = rows.groupby(["task", "scope", "finetune_steps", "ratio"])["flops_plan"].agg(
        lambda f: (f.max() - f.min()) / f.max() if f.max() > 0 else np.nan)
    return float(spread.max()) if len(spread) else float("nan")


def _intro(summary: pd.DataFrame) -> list[str]:
    spread = flops_spread(summary)
    lines = [INTRO.format(spread="no such rows here" if np.isnan(spread) else
                          f"measured here: the metrics' mean FLOPs at a ratio differ by at most {spread:.1%}"), ""]
    if spread > FLOPS_TOLERANCE:
        lines += [f"**Warning**: at some `flops` ratio the metrics' planned-action FLOPs differ by {spread:.1%}, more "
                  f"than the {FLOPS_TOLERANCE:.0%} the budget promises: those rows do not compare equal costs.", ""]
    return lines


#: What each plot file shows, by the start of its name (the ``Plots`` section of summary.md).
PLOT_CAPTIONS = {
    "pareto_flops": "return vs planned-action FLOPs",
    "pareto_latency": "return vs planned-action latency (horizontal bars: the IQR of the timing repeats)",
    "control_rate": "retained return vs planned-action control rate (Hz = 1000 / latency_plan_ms, batch 1), "
                    "with 50 / 100 / 300 Hz lines",
    "importance": "importance share per layer over training (one colour scale for every metric)",
    "rank_correlation": "rank correlation between metrics over training",
    "performance_profile": "performance profiles of the retained return (rliable)",
}


def summary_markdown(summary: pd.DataFrame, failures: pd.DataFrame, correlations: dict[str, pd.DataFrame] | None = None,
                     notes: Sequence[str] = (), plots: Sequence[Path] = (), statistics: Sequence[str] = (),
                     warnings: Sequence[str] = ()) -> str:
    """``summary.md``: the warnings, a table per task (x scope x fine-tuning steps) with the best metric per
    ratio in bold, the mean rank correlation between metrics, the statistics, the failed jobs and the plots."""
    lines = ["# Pruning sweep summary", "", *_intro(summary)]
    lines += [f"**Warning**: {w}" for w in warnings] + ([""] if warnings else [])
    lines += _task_tables(summary)
    for key, corr in (correlations or {}).items():
        lines += _correlation_lines(key, corr)
    lines += list(statistics)
    lines += [f"Note: {n}" for n in notes] + ([""] if notes else [])
    if len(failures):
        lines += [f"## Failed jobs ({len(failures)})", "", "| run dir | error |", "|---|---|"]
        for _, f in failures.iterrows():
            lines.append(f"| `{_md(f['run_dir'])}` | {_md(f['error'])}: {_md(f['message'])[:300]} |")
        lines.append("")
    else:
        lines += ["No failed jobs.", ""]
    if plots:
        lines += ["## Plots", ""] + [_plot_line(p) for p in plots if p.suffix == ".png"] + [""]
    return "\n".join(lines)


def _plot_line(path: Path) -> str:
    caption = next((c for stem, c in PLOT_CAPTIONS.items() if path.stem.startswith(stem)), "")
    return f"- [{path.name}]({path.name})" + (f": {caption}" if caption else "")


def _task_tables(summary: pd.DataFrame) -> list[str]:
    lines = []
    for (task, budget, scope, ft), t in summary.groupby(list(SUMMARY_KEYS), sort=True):
        if scope == "-":
            continue  # dense rows are shown in every table of their task
        dense = summary[(summary["task"] == task) & (summary["finetune_steps"] == ft) & (summary["metric"] == DENSE)]
        what = ("bold: the best metric at each FLOPs budget (ratio of planned-action FLOPs removed)" if budget == "flops"
                else "channel ratio, not a FLOPs budget: costs differ between metrics")
        lines += [f"## {task} (budget {budget}: {what}; scope {scope}, {ft:g} fine-tuning steps)", "",
                  "| metric | ratio | n | return | retained | params | MFLOP / plan | latency / plan (ms) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for _, r in pd.concat([dense, t]).iterrows():
            name = f"**{r['metric']}**" if r["best"] else r["metric"]
            n = int(r["n"])
            lines.append(f"| {name} | {r['ratio']:g} | {n} | {_pm(r['return_mean'], r['return_std'], n)} "
                         f"| {_pm(r['retained_pct'], r['retained_pct_std'], n)} % | {_fmt(r['params'], 0)} "
                         f"| {_fmt(r['flops_plan'] / 1e6)} | {_fmt(r['latency_plan_ms'], 2)} |")
        lines.append("")
    only_dense = summary[(summary["metric"] == DENSE) & ~summary.set_index(["task", "finetune_steps"]).index.isin(
        summary[summary["metric"] != DENSE].set_index(["task", "finetune_steps"]).index)]
    for _, r in only_dense.iterrows():
        lines += [f"## {r['task']} (dense only, {r['finetune_steps']:g} fine-tuning steps)", "",
                  f"return {_pm(r['return_mean'], r['return_std'], int(r['n']))} (n = {int(r['n'])})", ""]
    return lines


def _correlation_lines(key: str, corr: pd.DataFrame) -> list[str]:
    if corr.empty:
        return []
    mean = corr.groupby(["metric_a", "metric_b"])["spearman"].mean()
    metrics = sorted(set(corr["metric_a"]) | set(corr["metric_b"]))
    lines = [f"## Rank correlation between metrics: {key}", "",
             f"Spearman's rho of the channel scores within each layer (weighted mean over layers by "
             f"channels), mean over {corr['step'].nunique()} snapshots "
             f"and {int(corr['runs'].max())} run(s).", "",
             "| | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for a in metrics:
        cells = [_fmt(1.0 if a == b else mean.get((a, b), mean.get((b, a), np.nan)), 2) for b in metrics]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return lines + [""]


def slower_than_dense(summary: pd.DataFrame) -> list[str]:
    """One line per summary row (a seed mean) whose planned-action latency exceeds its dense reference's
    (same task and fine-tuning steps): pruning removed FLOPs, so a slower measurement means the timing was
    disturbed (other work on the cores) or the smaller shapes run less efficiently."""
    out = []
    dense = summary[summary["metric"] == DENSE].set_index(["task", "finetune_steps"])["latency_plan_ms"]
    for _, r in summary[summary["metric"] != DENSE].iterrows():
        ref = dense.get((r["task"], r["finetune_steps"]))
        if ref is not None and np.isfinite(ref) and r["latency_plan_ms"] > ref:
            out.append(f"{r['task']} {r['metric']} ratio {r['ratio']:g} (scope {r['scope']}, {r['finetune_steps']:g} "
                       f"fine-tuning steps): planned-action latency {r['latency_plan_ms']:.2f} ms > dense "
                       f"{ref:.2f} ms; the pruned model measured slower than the dense one")
    return out


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as short formatted strings for a terminal (what the main job prints); the scope and
    fine-tuning columns only when they differ between rows."""
    varies = {k: summary.loc[summary["metric"] != DENSE, k].nunique() > 1 for k in ("budget", "scope", "finetune_steps")}
    rows = []
    for _, r in summary.iterrows():
        rows.append({
            "task": r["task"],
            **({"budget": r["budget"]} if varies["budget"] else {}),
            **({"scope": r["scope"]} if varies["scope"] else {}),
            **({"ft": f"{r['finetune_steps']:g}"} if varies["finetune_steps"] else {}),
            "metric": r["metric"] + (" *" if r["best"] else ""), "ratio": f"{r['ratio']:g}",
            "n": str(int(r["n"])), "return": _pm(r["return_mean"], r["return_std"], int(r["n"])),
            "retained": f"{_fmt(r['retained_pct'])} %", "params": f"{r['params'] / 1e3:,.1f}k",
            "MFLOP/plan": _fmt(r["flops_plan"] / 1e6), "ms/plan": _fmt(r["latency_plan_ms"], 2),
            "ms/policy": _fmt(r["latency_policy_ms"], 3),
        })
    return pd.DataFrame(rows)


def print_summary(summary: pd.DataFrame, title: str = "return vs FLOPs vs latency") -> None:
    """Print the summary as a rich table (``*``: best metric at that ratio)."""
    from rich.console import Console
    from rich.table import Table

    table = display_table(summary)
    t = Table(title=title, caption="* best metric at that ratio; FLOPs / latency: one planned action, batch 1")
    for col in table.columns:
        t.add_column(col, justify="left" if col in ("task", "scope", "metric") else "right", no_wrap=True)
    for _, row in table.iterrows():
        t.add_row(*row.tolist())
    Console(width=max(120, Console().width)).print(t)
