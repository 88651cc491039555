"""Comparable groups of prune jobs: jobs that differ in more than their metric and ratio are labelled apart.

Every table, plot and statistic of the report groups jobs by task, budget, scope, fine-tuning steps, metric
and ratio, and treats the jobs of one group as seeds of one experiment. Jobs that also differ in a setting
without a group key of its own would be pooled as such: the agent's size (``model_size``, which changes the
dense reference too) or a prune setting of :data:`pruning.study.collect.SETTING_COLUMNS` (e.g.
``normalize_by=component`` and ``group`` rank the channels differently). :func:`label_variants` folds what
varies into the labels the report groups by:

- the task becomes ``"<task> (model_size <m>)"`` when the jobs of a task have several sizes, and
  ``"<task> (trained <N> env steps)"`` where one training seed has several agents trained for different
  numbers of env steps (``trained_env_steps``: e.g. two experiments' folders reported together; seeds that
  merely end at different env steps, with an env whose episodes end early, are not split);
- a pruned job's metric becomes ``"<metric> [key=value, ...]"``, listing the settings that take more than
  one value among the pruned jobs of its task (``null``, the training run's tracker setting, reads
  ``train``). Dense references (ratio 0) keep their metric: nothing is removed, so no setting applies.

Where nothing varies (the usual sweep) nothing changes. :func:`base_metric` gives a label's metric name.
:func:`comparable_sets` splits a task's jobs by budget, scope and fine-tuning steps for the plots (the
tables and statistics group by them already).
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from pruning.study.collect import SETTING_COLUMNS, agent_column


def base_metric(label: str) -> str:
    """The registered metric name of a label of :func:`label_variants` (``"fisher [normalize_by=group]"``
    -> ``"fisher"``)."""
    return str(label).split(" [", 1)[0]


def _value(v: object) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "train"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def label_variants(results: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``results`` (:func:`pruning.study.collect.collect_results`) with the task and metric labels
    described in the module doc."""
    df = results.copy()
    if df.empty:
        return df
    if "model_size" in df:
        sizes = df.groupby("task")["model_size"].transform(lambda s: s.astype(str).nunique())
        several = sizes > 1
        df.loc[several, "task"] = [f"{t} (model_size {m})" for t, m in
                                   zip(df.loc[several, "task"], df.loc[several, "model_size"])]
    if "trained_env_steps" in df:  # only where one training seed has agents of different training lengths
        steps = pd.to_numeric(df["trained_env_steps"], errors="coerce")
        seed = df["train_seed"].fillna(-1) if "train_seed" in df else pd.Series(-1, index=df.index)
        keys = [df["task"], seed]
        clash = (agent_column(df).groupby(keys).transform("nunique") > 1) & (
            steps.groupby(keys).transform("nunique") > 1)
        several = clash.groupby(df["task"]).transform("any") & steps.notna()  # then every row of that task
        df.loc[several, "task"] = [f"{t} (trained {int(n)} env steps)" for t, n in
                                   zip(df.loc[several, "task"], steps[several])]
    settings = [c for c in SETTING_COLUMNS if c in df]
    pruned = df["ratio"] > 0
    for _, g in df[pruned].groupby("task"):
        keys = [c for c in settings if g[c].map(_value).nunique() > 1]
        if not keys:
            continue
        labels = [f"{m} [" + ", ".join(f"{k}={_value(v)}" for k, v in zip(keys, vals)) + "]"
                  for m, vals in zip(g["metric"], g[keys].itertuples(index=False))]
        df.loc[g.index, "metric"] = labels
    return df


def comparable_sets(results: pd.DataFrame) -> Iterator[tuple[str, str, str, pd.DataFrame]]:
    """``(task, title, file suffix, jobs)`` per task and per budget x scope x fine-tuning steps of its pruned
    jobs, with the dense references (ratio 0) of the same fine-tuning steps. Where a task has one such set
    the suffix is ``""`` and the title the task (file names as before); else the suffix is
    ``_<budget>_<scope>_ft<steps>`` and the title names them, so that no plot pools jobs the tables keep
    apart."""
    from pruning.study.tables import with_budget

    df = with_budget(results)
    for task, t in df.groupby("task", sort=True):
        pruned = t[t["ratio"] > 0]
        sets = pruned[["budget", "scope", "finetune_steps"]].drop_duplicates().sort_values(
            ["budget", "scope", "finetune_steps"])
        if len(sets) <= 1:
            yield task, task, "", t
            continue
        for budget, scope, steps in sets.itertuples(index=False):
            mine = (t["ratio"] > 0) & (t["budget"] == budget) & (t["scope"] == scope) & (t["finetune_steps"] == steps)
            dense = (t["ratio"] == 0) & (t["finetune_steps"] == steps)
            yield (task, f"{task} (budget {budget}, scope {scope}, {steps:g} fine-tuning steps)",
                   f"_{budget}_{scope}_ft{steps:g}", t[mine | dense])
