"""Sweep report: results table, summary, Pareto plots, importance heat-maps and rank correlations.

    python scripts/report.py SWEEP_DIR... [--out DIR]

Reads every ``result.json`` (prune jobs, :mod:`pruning.study.prune_job`), the markers of failed jobs and every
``importance.parquet`` (training runs, :mod:`pruning.tracker`) below the given folders and writes into
``out``:

- ``results.csv``: one row per prune job (:data:`RESULT_COLUMNS`, then ``run_dir``);
- ``summary.md`` / ``summary.csv``: per task x scope x fine-tuning steps x metric x ratio the mean ± std
  over seeds of the eval return, the return retained as % of the dense reference (the mean return of the
  ``ratio=0`` jobs of the same task and fine-tuning steps; the training run's final return when there are
  none), mean params, FLOPs and latency; the best metric of each FLOPs budget (ratio) in bold; the mean
  rank correlation between metrics; the failed jobs;
- ``pareto_flops_<task>.{png,svg}`` and ``pareto_latency_<task>.{png,svg}``: return vs planned-action FLOPs
  / latency; every job a dot, the seed mean of each ratio with its std, one Pareto line per metric through
  the means it is not beaten on (no other mean of that metric has lower cost and higher return), dense as
  a star;
- ``importance_<task>.{png,svg}`` (+ ``.csv``): per metric a heat-map layer x step of the layer's share of
  importance, ``mean score of its channels / sum over layers of that mean``, averaged over the training
  runs of the task: the "dynamic shifts" of importance during training;
- ``rank_correlation_<task>.{png,svg}`` (+ ``.csv``): Spearman's rho between the channel scores of every
  pair of metrics at each snapshot step, mean ± std over the runs of the task.

Runs whose ``config.yaml`` names no task are reported under their folder name. Failed jobs are a run dir
with ``error.json``, a prune-job run dir (Hydra's ``.hydra/config.yaml`` with ``checkpoint``, ``metric``,
``ratio``) without ``result.json``, a ``result.json`` that cannot be read or lacks keys of
:data:`REQUIRED_KEYS`, an unreadable ``importance.parquet``, and a submitit job whose result pickle holds an
error. They are listed in ``summary.md``, never fatal.

Spearman's rho is the Pearson correlation of ranks (pandas only, no scipy; ties get their mean rank).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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
    "return_post_prune",
)
#: Keys a result.json must hold to be reported (``pruning.study.prune_job`` writes these and more).
REQUIRED_KEYS = (
    "task", "seed", "metric", "ratio", "scope", "finetune_steps", "dense_return", "return_mean", "return_std",
    "params", "params_dense", "flops_policy", "flops_plan", "latency_policy_ms", "latency_plan_ms",
    "latency_policy_iqr_ms", "latency_plan_iqr_ms", "widths", "git_commit", "config",
)
IMPORTANCE_COLUMNS = ("step", "component", "layer", "channel", "metric", "score")
FAILURE_COLUMNS = ("run_dir", "error", "message")
SUMMARY_KEYS = ("task", "budget", "scope", "finetune_steps")  # one table per combination
DENSE = "dense"  # metric label of the ratio-0 reference in the summary


class ReportError(ValueError):
    """Nothing to report (no folder, no result); the message is one line for the user."""


# ------------------------------------------------------------------------------------------ collect


def _failure(run_dir: Path | str, error: str, message: str) -> dict:
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


def collect_results(dirs: Iterable[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(results, failures)`` below ``dirs`` (see the module docstring for what counts as failed).

    A run dir holding both ``result.json`` and ``error.json`` (failed once, then completed) counts as
    completed. Raises :class:`ReportError` for a folder that does not exist.
    """
    rows, failures = [], []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise ReportError(f"not a folder: {d}")
        seen: set[Path] = set()
        for path in sorted(d.rglob(RESULT_FILE)):
            seen.add(path.parent)
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                failures.append(_failure(path.parent, "UnreadableResult", str(err)))
                continue
            missing = [k for k in REQUIRED_KEYS if not isinstance(data, dict) or k not in data]
            if missing:
                failures.append(_failure(path.parent, "IncompleteResult", f"result.json lacks {', '.join(missing)}"))
                continue
            row = {c: data.get(c) for c in RESULT_COLUMNS}
            row["widths"] = json.dumps(row["widths"])
            row["run_dir"] = str(path.parent)
            rows.append(row)
        for path in sorted(d.rglob(ERROR_FILE)):
            if path.parent in seen:
                continue
            seen.add(path.parent)
            try:
                info = json.loads(path.read_text())
                failures.append(_failure(path.parent, str(info.get("error")), str(info.get("message"))))
            except (OSError, ValueError, AttributeError):
                failures.append(_failure(path.parent, "UnreadableError", f"unreadable {path.name}"))
        for path in sorted(d.rglob(".hydra/config.yaml")):
            run = path.parent.parent
            if run not in seen and _is_prune_job(run):
                failures.append(_failure(run, "NoResult", "no result.json or error.json (killed, timed out, "
                                                          "or still running)"))
        for path in sorted(d.rglob(".submitit/*/*_result.pkl")):
            message = submitit_error(path)
            if message is not None:
                failures.append(_failure(path.parent, "SubmititError", message))
    results = pd.DataFrame(rows, columns=[*RESULT_COLUMNS, "run_dir"])
    return results, pd.DataFrame(failures, columns=FAILURE_COLUMNS)


@dataclass
class ImportanceRun:
    """A training run's importance file; ``key`` groups runs in the report (the task, else the run)."""

    path: Path
    name: str
    task: str | None

    @property
    def key(self) -> str:
        return self.task or self.name


def find_importance(dirs: Iterable[str | Path]) -> list[ImportanceRun]:
    """Every ``importance.parquet`` below ``dirs`` with its run's task (from the run's ``config.yaml``)."""
    runs = []
    for d in dirs:
        for path in sorted(Path(d).rglob(IMPORTANCE_FILE)):
            cfg = _yaml(path.parent / "config.yaml") or _yaml(path.parent / ".hydra" / "config.yaml") or {}
            runs.append(ImportanceRun(path=path, name="_".join(path.parent.parts[-2:]), task=cfg.get("task")))
    return runs


def read_importance(path: Path) -> pd.DataFrame:
    """An importance table (:data:`IMPORTANCE_COLUMNS`); ``ValueError`` if unreadable or incomplete."""
    try:
        table = pd.read_parquet(path, columns=list(IMPORTANCE_COLUMNS))
    except Exception as err:  # pyarrow raises several types for bad files / missing columns
        raise ValueError(f"unreadable {path.name}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    return table


# ------------------------------------------------------------------------------------------ summary


def _std(x: pd.Series) -> float:
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
    highest mean return at each ratio (the FLOPs budget of a sweep) of a table.
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
    df["retained"] = 100.0 * df["return_mean"] / df["ref"].where(df["ref"].abs() > 1e-12)
    g = df.groupby([*SUMMARY_KEYS, "metric", "ratio"], sort=True)
    s = g.agg(n=("return_mean", "size"), return_mean=("return_mean", "mean"), return_std=("return_mean", _std),
              retained_pct=("retained", "mean"), retained_pct_std=("retained", _std), params=("params", "mean"),
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


def summary_markdown(summary: pd.DataFrame, failures: pd.DataFrame, correlations: dict[str, pd.DataFrame] | None = None,
                     notes: Sequence[str] = (), plots: Sequence[Path] = (), statistics: Sequence[str] = ()) -> str:
    """``summary.md``: a table per task (x scope x fine-tuning steps) with the best metric per ratio in
    bold, the mean rank correlation between metrics, the failed jobs and the plot files."""
    lines = ["# Pruning sweep summary", "",
             "Return: mean ± std over runs of the eval return (n runs; no spread is shown for n = 1); retained: % "
             "of the dense reference (ratio 0, same task and fine-tuning steps). FLOPs and latency: one planned "
             "action (MPPI) for a batch-1 observation. Budget `flops`: every metric removed the same fraction of "
             "the planned-action FLOPs (to within 1 %), so rows of one ratio compare models of equal cost; "
             "budget `channels`: the same fraction of channels, so their costs differ (see the FLOPs column). "
             "**Bold**: best metric at that ratio.", ""]
    for (task, budget, scope, ft), t in summary.groupby(list(SUMMARY_KEYS), sort=True):
        if scope == "-":
            continue  # dense rows are shown in every table of their task
        dense = summary[(summary["task"] == task) & (summary["finetune_steps"] == ft) & (summary["metric"] == DENSE)]
        what = ("best metric at ≤ the listed MFLOP per planned action" if budget == "flops"
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
                  f"return {_fmt(r['return_mean'])} ± {_fmt(r['return_std'])} over {int(r['n'])} seeds", ""]
    for key, corr in (correlations or {}).items():
        if corr.empty:
            continue
        mean = corr.groupby(["metric_a", "metric_b"])["spearman"].mean()
        metrics = sorted(set(corr["metric_a"]) | set(corr["metric_b"]))
        lines += [f"## Rank correlation between metrics: {key}", "",
                  f"Spearman's rho of the channel scores within each layer (weighted mean over layers by "
                  f"channels), mean over {corr['step'].nunique()} snapshots "
                  f"and {int(corr['runs'].max())} run(s).", "",
                  "| | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
        for a in metrics:
            cells = []
            for b in metrics:
                v = 1.0 if a == b else mean.get((a, b), mean.get((b, a), np.nan))
                cells.append(_fmt(v, 2))
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines.append("")
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
        lines += ["## Plots", ""] + [f"- [{p.name}]({p.name})" for p in plots if p.suffix == ".png"] + [""]
    return "\n".join(lines)


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


def pareto_front(cost: Sequence[float], value: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (lower-or-equal cost and higher value), by cost.

    Of points with equal cost only the first of the highest value is kept. Sort by (cost, -value); a point
    is on the front iff its value exceeds the running maximum of the values before it.
    """
    cost, value = np.asarray(cost, dtype=float), np.asarray(value, dtype=float)
    if cost.size == 0:
        return []
    order = np.lexsort((-value, cost))
    v = value[order]
    before = np.maximum.accumulate(np.concatenate([[-np.inf], v[:-1]]))
    return order[v > before].tolist()


# ------------------------------------------------------------------------------------------ importance


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


# ------------------------------------------------------------------------------------------ plots


def _figure(width: float, height: float, rows: int = 1, cols: int = 1):
    """A Figure that is not registered with pyplot (no GUI backend, nothing to close)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(fig, out: Path, stem: str) -> list[Path]:
    import matplotlib

    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    with matplotlib.rc_context({"svg.hashsalt": "ca-prune"}):  # stable SVG ids
        fig.savefig(paths[0], dpi=130)
        fig.savefig(paths[1], metadata={"Date": None})
    return paths


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "-" for c in str(name))


def plot_pareto(results: pd.DataFrame, out: Path) -> list[Path]:
    """Return vs planned-action FLOPs and vs latency per task, one Pareto line per metric (see module doc)."""
    paths: list[Path] = []
    for task, t in results.groupby("task", sort=True):
        dense = t[t["ratio"] == 0]
        pruned = t[t["ratio"] > 0]
        for col, label, stem in (("flops_plan", "FLOPs per planned action", "pareto_flops"),
                                 ("latency_plan_ms", "latency per planned action (ms)", "pareto_latency")):
            fig, axes = _figure(6.4, 4.2)
            ax = axes[0, 0]
            d_cost, d_ret = dense[col].mean(), dense["return_mean"].mean()
            for k, (metric, m) in enumerate(pruned.groupby("metric", sort=True)):
                color = f"C{k % 10}"
                ax.scatter(m[col], m["return_mean"], color=color, alpha=0.25, s=10, linewidths=0)
                means = m.groupby("ratio").agg(cost=(col, "mean"), ret=("return_mean", "mean"),
                                               std=("return_mean", _std)).reset_index()
                ax.errorbar(means["cost"], means["ret"], yerr=means["std"], fmt="o", ms=4, color=color, capsize=2,
                            lw=0.8)
                if len(dense):  # the dense model is the ratio-0 point of every metric
                    means = pd.concat([means, pd.DataFrame({"ratio": [0.0], "cost": [d_cost], "ret": [d_ret],
                                                            "std": [0.0]})], ignore_index=True)
                front = means.iloc[pareto_front(means["cost"], means["ret"])]
                ax.step(front["cost"], front["ret"], where="post", color=color, label=metric, lw=1.5)
            if len(dense):
                ax.scatter([d_cost], [d_ret], marker="*", s=160, color="black", label=DENSE, zorder=5)
            if (t[col] > 0).all():
                ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel("eval return")
            ax.set_title(f"{task}: return vs {label.split(' per')[0]}", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            fig.tight_layout()
            paths += _save(fig, out, f"{stem}_{_slug(task)}")
    return paths


def plot_importance(key: str, layers: pd.DataFrame, out: Path) -> list[Path]:
    """Heat-maps layer x step of the importance share (``layers``: :func:`layer_importance` rows, averaged
    over runs), one panel per metric."""
    metrics = list(dict.fromkeys(layers["metric"]))
    if not metrics:
        return []
    order = list(dict.fromkeys(layers["layer"]))
    fig, axes = _figure(7.5, 1.0 + (0.9 + 0.16 * len(order)) * len(metrics), rows=len(metrics))
    for ax, metric in zip(axes[:, 0], metrics):
        pivot = layers[layers["metric"] == metric].pivot(index="layer", columns="step", values="share").reindex(order)
        im = ax.imshow(pivot.to_numpy(), aspect="auto", cmap="viridis", interpolation="nearest", vmin=0)
        ax.set_yticks(range(len(order)), order, fontsize=6)
        steps = pivot.columns.to_list()
        ticks = np.linspace(0, len(steps) - 1, min(6, len(steps))).astype(int)
        ax.set_xticks(ticks, [str(steps[i]) for i in ticks], fontsize=7)
        ax.set_title(f"{metric}: share of importance per layer (mean channel score / sum over layers)", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.025)
    axes[-1, 0].set_xlabel("update step")
    fig.tight_layout()
    return _save(fig, out, f"importance_{_slug(key)}")


def plot_run_importance(path: str | Path, out: str | Path, metrics: Sequence[str] | None = None,
                        key: str = "run") -> list[Path]:
    """The heat-maps of one run's ``importance.parquet`` (``metrics``: only these; ``None``: all) as
    ``out/importance_<key>.png|svg``; ``[]`` when the file holds no snapshot of those metrics.

    Used by train and prune runs to log their importance heat-maps to W&B."""
    table = read_importance(Path(path))
    if metrics is not None:
        table = table[table["metric"].isin(list(metrics))]
    if table.empty:
        return []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return plot_importance(key, layer_importance(table), out)


def plot_rank_correlations(key: str, corr: pd.DataFrame, out: Path) -> list[Path]:
    """Spearman's rho vs step, a line (± std over runs) per pair of metrics."""
    if corr.empty:
        return []
    fig, axes = _figure(7.5, 4.2)
    ax = axes[0, 0]
    for k, ((a, b), c) in enumerate(corr.groupby(["metric_a", "metric_b"], sort=True)):
        color = f"C{k % 10}"
        ax.plot(c["step"], c["spearman"], label=f"{a}–{b}", lw=1, color=color,
                ls="-" if k < 10 else "--" if k < 20 else ":")
        if (c["runs"] > 1).any():
            ax.fill_between(c["step"], c["spearman"] - c["spearman_std"], c["spearman"] + c["spearman_std"],
                            color=color, alpha=0.12, lw=0)
    ax.set_xlabel("update step")
    ax.set_ylabel("Spearman ρ of channel scores")
    ax.set_ylim(-1.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=3)
    ax.set_title(f"agreement between metrics over training ({key})", fontsize=9)
    fig.tight_layout()
    return _save(fig, out, f"rank_correlation_{_slug(key)}")


# ------------------------------------------------------------------------------------------ all


def importance_report(runs: Sequence[ImportanceRun], out: Path) -> tuple[dict[str, pd.DataFrame], list[dict], list[Path]]:
    """Heat-maps and rank correlations per task (runs averaged): ``(correlations by key, failures, plots)``.

    Reads one file at a time (a long run holds millions of rows) and keeps only the aggregates.
    """
    layers: dict[str, list[pd.DataFrame]] = {}
    corrs: dict[str, list[pd.DataFrame]] = {}
    failures, paths = [], []
    for run in runs:
        try:
            table = read_importance(run.path)
        except ValueError as err:
            failures.append(_failure(run.path.parent, "UnreadableImportance", str(err)))
            continue
        if table.empty:
            continue
        layers.setdefault(run.key, []).append(layer_importance(table).assign(run=run.name))
        corrs.setdefault(run.key, []).append(rank_correlations(table).assign(run=run.name))
    correlations = {}
    for key in layers:
        lay = pd.concat(layers[key]).groupby(["metric", "component", "layer", "step"], sort=False)[["score", "share"]]
        lay = lay.mean().reset_index()
        lay.to_csv(out / f"importance_{_slug(key)}.csv", index=False)
        paths += plot_importance(key, lay, out)
        c = pd.concat(corrs[key]).groupby(["metric_a", "metric_b", "step"], sort=True)["spearman"]
        c = c.agg(spearman="mean", spearman_std=_std_or_zero, runs="count").reset_index()
        c = c[["step", "metric_a", "metric_b", "spearman", "spearman_std", "runs"]]
        c.to_csv(out / f"rank_correlation_{_slug(key)}.csv", index=False)
        paths += plot_rank_correlations(key, c, out)
        correlations[key] = c
    return correlations, failures, paths


def _std_or_zero(x: pd.Series) -> float:
    x = x.dropna()
    return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0


def write_report(dirs: Sequence[str | Path], out: str | Path) -> pd.DataFrame:
    """Write every report file into ``out`` (see the module docstring); returns the summary table.

    Raises :class:`ReportError` when a folder is missing or nothing (no result, no failure, no
    importance file) is found.
    """
    out = Path(out)
    results, failures = collect_results(dirs)
    runs = find_importance(dirs)
    if results.empty and failures.empty and not runs:
        raise ReportError(f"no result.json, error.json or importance.parquet below {', '.join(map(str, dirs))}")
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "results.csv", index=False)
    summary = summarize(results)
    summary.to_csv(out / "summary.csv", index=False)
    plots = plot_pareto(results, out) if not results.empty else []
    correlations, bad, more = importance_report(runs, out)
    plots += more
    failures = pd.concat([failures, pd.DataFrame(bad, columns=FAILURE_COLUMNS)], ignore_index=True)
    # Snapshots hold raw scores (pruning.tracker), so the heat-maps show shifts between components too.
    notes: list[str] = []
    stats_lines = statistics_report(results, out, plots)
    (out / "summary.md").write_text(summary_markdown(summary, failures, correlations, notes, plots, stats_lines))
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
