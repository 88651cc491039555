"""Sweep statistics (pruning/study/stats.py, rliable) against hand computations on a tiny table of results."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from pruning.study import stats

DENSE = {(1, 1): 200.0, (1, 2): 180.0, (2, 1): 400.0, (2, 2): 100.0}  # (train_seed, seed) -> dense return
RET = {  # (metric, ratio) -> returns of the four runs in DENSE order
    ("fisher", 0.25): [190.0, 171.0, 360.0, 99.0], ("fisher", 0.5): [160.0, 90.0, 300.0, 70.0],
    ("l1", 0.25): [180.0, 162.0, 380.0, 80.0], ("l1", 0.5): [100.0, 126.0, 200.0, 40.0],
}


def table() -> pd.DataFrame:
    rows = []
    for (ts, s), d in DENSE.items():
        rows.append({"task": "t", "train_seed": ts, "seed": s, "metric": "l1", "ratio": 0.0, "finetune_steps": 5,
                     "return_mean": d, "dense_return": 999.0, "flops_plan": 1000.0, "flops_plan_dense": 1000.0})
    for (metric, ratio), rets in RET.items():
        for (ts, s), r in zip(DENSE, rets):
            rows.append({"task": "t", "train_seed": ts, "seed": s, "metric": metric, "ratio": ratio,
                         "finetune_steps": 5, "return_mean": r, "dense_return": 999.0,
                         "flops_plan": 1000.0 * (1 - ratio), "flops_plan_dense": 1000.0})
    return pd.DataFrame(rows)


def retained(metric, ratio):
    return [100 * r / d for r, d in zip(RET[(metric, ratio)], DENSE.values())]


def test_retained_return_uses_the_same_agents_dense_reference_after_the_same_finetune():
    df = stats.retained_returns(table())
    assert len(df) == 16 and (df["ratio"] > 0).all()
    got = df[(df.metric == "fisher") & (df.ratio == 0.5)].sort_values(["train_seed", "seed"])["retained"]
    np.testing.assert_allclose(got, [80.0, 50.0, 75.0, 70.0])


def test_iqm_equals_the_mean_of_the_middle_half():
    iqm = stats.iqm_table(stats.retained_returns(table()))
    for (metric, ratio) in RET:
        x = sorted(retained(metric, ratio))
        row = iqm[(iqm.metric == metric) & (iqm.ratio == ratio)].iloc[0]
        assert row["iqm"] == pytest.approx((x[1] + x[2]) / 2)  # 4 runs: trim one at each end
        assert row["n"] == 4 and row["ci_low"] <= row["iqm"] <= row["ci_high"]
        assert min(x) <= row["ci_low"] and row["ci_high"] <= max(x)


@pytest.mark.slow
def test_probability_of_improvement_counts_pairs():
    poi = stats.improvement_table(stats.retained_returns(table()))
    for ratio in (0.25, 0.5):
        a, b = retained("fisher", ratio), retained("l1", ratio)
        wins = sum((x > y) + 0.5 * (x == y) for x, y in itertools.product(a, b)) / 16
        row = poi[(poi.ratio == ratio) & (poi.metric == "fisher") & (poi.baseline == "l1")].iloc[0]
        assert row["p_improve"] == pytest.approx(wins)
        assert 0 <= row["ci_low"] <= row["p_improve"] <= row["ci_high"] <= 1
    assert set(poi["baseline"]) == {"l1"}  # gradient metrics are compared with baselines only


def test_auc_is_the_mean_retained_return_over_the_flops_range():
    auc = stats.auc_table(stats.retained_returns(table()))
    for metric in ("fisher", "l1"):
        per_run = []
        for y25, y50 in zip(retained(metric, 0.25), retained(metric, 0.5)):
            # points (0.5, y50), (0.75, y25), (1, 100): trapezoids, divided by the range 0.5
            per_run.append((0.25 * (y50 + y25) / 2 + 0.25 * (y25 + 100) / 2) / 0.5)
        assert auc.set_index("metric").loc[metric, "auc"] == pytest.approx(np.mean(per_run))


@pytest.mark.slow
def test_statistics_markdown_names_the_budget_and_n():
    lines = stats.statistics_markdown(stats.retained_returns(table()).assign(budget="flops"), "t")
    text = "\n".join(lines)
    assert "planned-action FLOPs removed" in text and "(n = 4)" in text and "P(X > Y)" in text


@pytest.mark.slow
def test_performance_profiles_are_the_fraction_of_runs_above_tau(tmp_path):
    df = stats.retained_returns(table())
    fig = stats.performance_profile_figure(df)
    panels = fig.axes
    assert [ax.get_title() for ax in panels] == ["ratio 0.25 (n = 4 runs)", "ratio 0.5 (n = 4 runs)"]
    for ax, ratio in zip(panels, (0.25, 0.5)):
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        for metric in ("fisher", "l1"):
            x = np.array(retained(metric, ratio))
            want = [(x > tau).mean() for tau in stats.TAUS]
            np.testing.assert_allclose(lines[metric].get_ydata(), want)
    paths = stats.plot_performance_profiles(df, tmp_path, "pp")
    assert [p.name for p in paths] == ["pp.png", "pp.svg"] and all(p.stat().st_size > 1000 for p in paths)


@pytest.mark.slow
def test_bootstrap_cis_are_reproducible_whatever_the_global_rng():
    df = stats.retained_returns(table())
    np.random.seed(1)
    first = stats.improvement_table(df), stats.iqm_table(df), stats.auc_table(df)
    np.random.seed(2)
    state = np.random.get_state()
    second = stats.improvement_table(df), stats.iqm_table(df), stats.auc_table(df)
    for a, b in zip(first, second):
        pd.testing.assert_frame_equal(a, b)  # rliable resamples with the global RNG: seeded inside
    assert np.array_equal(np.random.get_state()[1], state[1])  # and the caller's RNG state is restored


# ------------------------------------------------------------------ what cannot be compared is left out, said


def rows_for(spec: dict, dense: float = 200.0, task: str = "t", seeds=(1, 2, 3)) -> pd.DataFrame:
    """``spec``: (metric, ratio) -> return of every seed (seed added); one dense job per seed."""
    rows = [{"task": task, "train_seed": 1, "seed": s, "metric": "l1", "ratio": 0.0, "finetune_steps": 5,
             "return_mean": dense, "dense_return": 999.0, "flops_plan": 1000.0, "flops_plan_dense": 1000.0}
            for s in seeds]
    for (metric, ratio), ret in spec.items():
        rows += [{"task": task, "train_seed": 1, "seed": s, "metric": metric, "ratio": ratio, "finetune_steps": 5,
                  "return_mean": ret + s, "dense_return": 999.0, "flops_plan": 1000.0 * (1 - ratio),
                  "flops_plan_dense": 1000.0} for s in seeds]
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_a_metric_missing_at_one_ratio_leaves_its_cell_empty_not_the_next_metrics():
    spec = {("fisher", 0.25): 180.0, ("l1", 0.25): 100.0, ("l1", 0.5): 60.0}  # every fisher job at 0.5 failed
    df = stats.retained_returns(rows_for(spec))
    lines = stats.statistics_markdown(df, "t")
    header = next(ln for ln in lines if ln.startswith("| ratio | "))
    assert header == "| ratio | fisher | l1 |"
    row = next(ln for ln in lines if ln.startswith("| 0.5 (n = 3)"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    assert cells[0] == "–" and cells[1].startswith("**31.0 [")  # l1's (60 + 2) / 200 under l1, not under fisher


def test_auc_leaves_out_runs_that_lack_a_ratio_instead_of_integrating_an_easier_range():
    spec = {("fisher", 0.25): 150.0, ("fisher", 0.5): 100.0, ("l1", 0.25): 150.0, ("l1", 0.5): 100.0}
    full = rows_for(spec)
    # fisher's 0.5 jobs of seeds 1 and 2 failed: their curves end at 75 % of the FLOPs kept
    part = full[~((full.metric == "fisher") & (full.ratio == 0.5) & (full.seed < 3))]
    auc = stats.auc_table(stats.retained_returns(part)).set_index("metric")
    assert auc.loc["fisher", "n"] == 1 and auc.loc["l1", "n"] == 3  # each metric over its own complete runs

    def hand(seed):  # points (0.5, y50), (0.75, y25), (1, 100) over the range [0.5, 1]
        y25, y50 = 100 * (150 + seed) / 200, 100 * (100 + seed) / 200
        return (0.25 * (y50 + y25) / 2 + 0.25 * (y25 + 100) / 2) / 0.5
    assert auc.loc["fisher", "auc"] == pytest.approx(hand(3))
    assert auc.loc["l1", "auc"] == pytest.approx(np.mean([hand(1), hand(2), hand(3)]))
    assert stats.auc_table(stats.retained_returns(part)).attrs["notes"] == [
        "2 run(s) without a job at every ratio of their task: left out of the area"]


def test_auc_compares_curves_over_the_range_every_run_covers():
    g = pd.DataFrame({"flops_kept": [0.4, 0.8], "retained": [40.0, 80.0]})
    # from 0.5 (interpolated: 50) to 1: trapezoids (0.5, 50)-(0.8, 80)-(1, 100), over the width 0.5
    assert stats.run_auc(g, 0.5) == pytest.approx((0.3 * 65 + 0.2 * 90) / 0.5)
    assert np.isnan(stats.run_auc(g, 0.3))  # the curve does not reach down to 0.3
    assert stats.run_auc(g) == pytest.approx((0.4 * 60 + 0.2 * 90) / 0.6)


def test_a_negative_dense_return_leaves_the_retained_return_undefined():
    df = rows_for({("fisher", 0.5): -302.0, ("l1", 0.5): -162.0}, dense=-150.0)
    ret = stats.retained_returns(df)
    assert ret["retained"].isna().all()  # -302 / -150 would read "201 % retained" for the worse agent
    notes = stats._undefined_notes(ret)
    assert len(notes) == 1 and notes[0].startswith("task t: retained return undefined")
    assert stats.iqm_table(ret).empty


def test_one_run_per_task_gives_a_point_without_a_confidence_interval():
    df = stats.retained_returns(rows_for({("fisher", 0.5): 100.0, ("l1", 0.5): 50.0}, seeds=(1,)))
    iqm = stats.iqm_table(df).set_index("metric")
    assert iqm.loc["fisher", "iqm"] == pytest.approx(50.5) and iqm.loc["fisher", "n"] == 1
    assert iqm[["ci_low", "ci_high"]].isna().all().all()
    poi = stats.improvement_table(df).iloc[0]
    assert poi["p_improve"] == 1.0 and np.isnan(poi["ci_low"]) and np.isnan(poi["ci_high"])
    assert stats._ci(50.5, np.nan, np.nan) == "50.5 (no CI)"


def test_a_metric_without_runs_on_one_task_is_left_out_not_fatal():
    a = rows_for({("fisher", 0.5): 120.0, ("l1", 0.5): 100.0}, task="a")
    b = rows_for({("l1", 0.5): 90.0}, task="b")  # every fisher job of task b failed
    df = stats.retained_returns(pd.concat([a, b], ignore_index=True))
    iqm = stats.iqm_table(df)
    assert list(iqm["metric"]) == ["l1"] and list(iqm["n"]) == [6]
    assert iqm.attrs["notes"] == ["fisher at ratio 0.5: left out of the statistics, it has no run on every task"]


def test_runs_with_a_missing_return_do_not_count():
    df = rows_for({("fisher", 0.5): 100.0, ("l1", 0.5): 50.0})
    df.loc[(df.metric == "fisher") & (df.seed == 2), "return_mean"] = np.nan
    scores, n, left, notes = stats.score_matrices(stats.retained_returns(df))
    assert n == {"fisher": 2, "l1": 3} and left == [] and notes == []  # each metric over its own runs
    np.testing.assert_allclose(scores["fisher"].ravel(), [50.5, 51.5])


# ------------------------------------------------------------------ agents, references and per-metric runs


def test_two_training_runs_with_one_seed_are_two_agents_each_with_its_own_reference():
    """Two experiments' folders with the same task and seeds used to be pooled as one run, each job scored against
    the mean of both dense references (IQM fisher 82, P(fisher > l1) = 1.00 for a symmetric comparison)."""
    rows = []
    for ckpt, dense, fisher, l1 in (("/a/checkpoint.pt", 800.0, 720.0, 400.0), ("/b/checkpoint.pt", 200.0, 100.0, 180.0)):
        for metric, ratio, ret in (("l1", 0.0, dense), ("fisher", 0.5, fisher), ("l1", 0.5, l1)):
            rows.append({"task": "t", "train_seed": 1, "seed": 1, "metric": metric, "ratio": ratio, "finetune_steps": 5,
                         "return_mean": ret, "dense_return": 999.0, "flops_plan": 1000.0 * (1 - ratio),
                         "flops_plan_dense": 1000.0, "checkpoint": ckpt})
    df = stats.retained_returns(pd.DataFrame(rows))
    got = df.set_index(["agent", "metric"])["retained"]
    assert got[("/a/checkpoint.pt", "fisher")] == pytest.approx(90.0) and got[("/b/checkpoint.pt", "fisher")] == 50.0
    assert got[("/a/checkpoint.pt", "l1")] == 50.0 and got[("/b/checkpoint.pt", "l1")] == pytest.approx(90.0)
    assert (df["reference"] == "same seed").all()
    poi = stats.improvement_table(df).iloc[0]
    assert poi["p_improve"] == pytest.approx(0.5) and poi["n"] == 2  # two runs a side: {90, 50} vs {50, 90}
    assert stats.reference_notes(df) == ["task t: training seed 1 has 2 checkpoints (separate training runs): their "
                                         "jobs count as separate runs"]


def test_agents_trained_for_different_lengths_are_reported_as_two_tasks():
    from pruning.study.variants import label_variants

    df = pd.DataFrame({"task": ["t"] * 4, "metric": ["l1", "fisher"] * 2, "ratio": [0.0, 0.5] * 2, "train_seed": 1,
                       "trained_env_steps": [30000, 30000, 100000, 100000], "agent": ["a", "a", "b", "b"]})
    assert list(label_variants(df)["task"]) == ["t (trained 30000 env steps)"] * 2 + ["t (trained 100000 env steps)"] * 2
    assert list(label_variants(df.assign(trained_env_steps=30000))["task"]) == ["t"] * 4
    # seeds that end at different env steps (episodes that end early) are one experiment, not several tasks
    seeds = df.assign(train_seed=[1, 1, 2, 2])
    assert list(label_variants(seeds)["task"]) == ["t"] * 4
    # where a seed collides, every seed of the task is labelled (the longer experiment's seed 2 too)
    more = pd.concat([df, df.iloc[2:].assign(train_seed=2)], ignore_index=True)
    assert list(label_variants(more)["task"])[-2:] == ["t (trained 100000 env steps)"] * 2


def test_a_failed_dense_reference_leaves_its_agents_jobs_out_instead_of_using_the_training_return():
    """Agent 2's ratio=0 jobs failed: its jobs used to be scored against the training run's final return (not
    fine-tuned, 999 here) without a note. A job whose own seed's dense job failed uses its agent's other seeds."""
    a = rows_for({("fisher", 0.5): 100.0, ("l1", 0.5): 50.0})
    b = a.assign(train_seed=2)
    b = b[~((b.ratio == 0) & (b.seed <= 3))]  # every dense job of agent 2 failed
    a = a[~((a.ratio == 0) & (a.seed == 1))]  # agent 1's seed-1 dense job failed: the mean of seeds 2 and 3
    df = stats.retained_returns(pd.concat([a, b], ignore_index=True))
    one, two = df[df.train_seed == 1], df[df.train_seed == 2]
    assert two["retained"].isna().all() and (two["reference"] == "missing").all()
    seed1 = one[(one.seed == 1) & (one.metric == "fisher")].iloc[0]
    assert seed1["reference"] == "agent mean" and seed1["retained"] == pytest.approx(100 * 101.0 / 200.0)
    assert stats.reference_notes(df) == [
        "task t: 2 job(s) scored against the mean of their agent's dense references over other fine-tuning seeds "
        "(their own seed's dense job is missing or failed)",
        "task t: 6 job(s) of agents without any dense reference job (failed or missing): no retained return; left "
        "out of the statistics"]
    assert stats._undefined_notes(df) == []  # said once, by reference_notes
    assert list(stats.iqm_table(df)["n"]) == [3, 3]  # agent 1's runs only


def test_without_any_dense_job_the_training_return_is_the_reference_and_said_so():
    df = stats.retained_returns(rows_for({("fisher", 0.5): 100.0}).query("ratio > 0"))
    assert (df["reference"] == "training return").all()
    np.testing.assert_allclose(df["retained"], [100 * 101 / 999, 100 * 102 / 999, 100 * 103 / 999])
    assert stats.reference_notes(df) == ["task t: no dense reference job (ratio=0) in these results; 3 job(s) scored "
                                         "against the training run's final return, which was not fine-tuned"]


def test_each_metric_is_scored_over_its_own_runs():
    """Tasks trained with different seeds, or a metric with fewer runs than another, used to drop runs (or every
    table) silently: the runs common to every metric and task were used."""
    a = rows_for({("fisher", 0.5): 100.0, ("l1", 0.5): 50.0}, task="a", seeds=(1, 2, 3))
    b = rows_for({("fisher", 0.5): 120.0, ("l1", 0.5): 60.0}, task="b", seeds=(4, 5))  # other seeds, fewer
    b = pd.concat([b, rows_for({("fisher", 0.5): 130.0}, task="b", seeds=(6,))], ignore_index=True)
    df = stats.retained_returns(pd.concat([a, b], ignore_index=True))
    scores, n, left, notes = stats.score_matrices(df)
    assert n == {"fisher": 3, "l1": 2} and left == []
    np.testing.assert_allclose(scores["l1"], [[25.5, 32.0], [26.0, 32.5]])  # a: seeds 1, 2 (3 left out); b: 4, 5
    assert notes == ["l1, task a: 1 of its 3 runs left out (every task needs as many runs as the fewest, 2, for the "
                     "stratified bootstrap)"]
    iqm = stats.iqm_table(df).set_index("metric")
    assert iqm.loc["fisher", "n"] == 6 and iqm.loc["l1", "n"] == 4
    lines = stats.statistics_markdown(df, "t")
    row = next(ln for ln in lines if ln.startswith("| 0.5 |"))
    assert "(n = 6)" in row and "(n = 4)" in row  # different n in one row: each cell says its own
    assert any("1 of its 3 runs left out" in ln for ln in lines)


def test_the_area_averages_a_runs_repeated_jobs_whatever_their_order():
    base = dict(task="t", train_seed=1, seed=1, finetune_steps=5, dense_return=999.0, flops_plan_dense=1000.0)
    rows = [dict(base, metric="l1", ratio=0.0, return_mean=200.0, flops_plan=1000.0)]
    rows += [dict(base, metric="fisher", ratio=0.5, return_mean=r, flops_plan=500.0) for r in (100.0, 140.0)]
    for order in (rows, [rows[0], rows[2], rows[1]]):
        df = stats.retained_returns(pd.DataFrame(order))
        assert stats.iqm_table(df)["iqm"].tolist() == [60.0]
        assert stats.auc_table(df)["auc"].tolist() == [pytest.approx((60.0 + 100.0) / 2)]  # (0.5, 60)-(1, 100)


def test_an_area_without_flops_is_noted():
    df = stats.retained_returns(rows_for({("fisher", 0.5): 100.0}).assign(flops_plan_dense=np.nan))
    auc = stats.auc_table(df)
    assert auc.empty and auc.attrs["notes"] == [
        "3 run(s) without an area (their planned-action FLOPs, or the dense FLOPs, are unknown): left out of the area"]


def _asymmetric(seed: int = 0) -> pd.DataFrame:
    """Two tasks, 3 training x 2 fine-tuning seeds, three metrics (two gradient ones) with skewed returns and
    unequal FLOPs per run: a table where IQM, median and mean differ and the CIs are not symmetric."""
    rng = np.random.default_rng(seed)
    rows = []
    for task, ts, s in itertools.product(("a", "b"), (1, 2, 3), (1, 2)):
        common = {"task": task, "train_seed": ts, "seed": s, "finetune_steps": 5, "dense_return": 999.0,
                  "flops_plan_dense": 1000.0}
        rows.append({**common, "metric": "l1", "ratio": 0.0, "return_mean": 200.0 + 10 * ts, "flops_plan": 1000.0})
        for metric, scale in (("fisher", 1.0), ("bayes", 0.8), ("l1", 0.6)):
            for ratio in (0.25, 0.5):
                rows.append({**common, "metric": metric, "ratio": ratio,
                             "return_mean": (200.0 + 10 * ts) * scale * (1 - ratio) * rng.lognormal(0, 0.3),
                             "flops_plan": 1000.0 * (1 - ratio) * rng.uniform(0.99, 1.01)})
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_iqm_cis_and_improvement_equal_rliable_called_directly():
    """An independent reference: scipy's trimmed mean and rliable's own interval estimates on the (runs, tasks)
    matrices built here by hand (a 50 % CI, a median or a pooled P(X > Y) would differ)."""
    from rliable import library as rly
    from rliable import metrics as rm
    from scipy.stats import trim_mean

    df = stats.retained_returns(_asymmetric())
    iqm = stats.iqm_table(df).set_index(["ratio", "metric"])
    poi = stats.improvement_table(df).set_index(["ratio", "metric", "baseline"])
    assert set(poi.index.get_level_values("metric")) == {"fisher", "bayes"}
    assert set(poi.index.get_level_values("baseline")) == {"l1"}  # never gradient vs gradient
    for ratio in (0.25, 0.5):
        g = df[df.ratio == ratio]
        mats = {m: np.stack([g[(g.metric == m) & (g.task == t)].sort_values(["train_seed", "seed"])["retained"]
                             .to_numpy() for t in ("a", "b")], axis=1) for m in ("fisher", "bayes", "l1")}
        with stats.seeded_global_rng():
            point, ci = rly.get_interval_estimates({m: mats[m] for m in mats}, lambda x: np.array([rm.aggregate_iqm(x)]),
                                                   reps=stats.REPS, random_state=np.random.RandomState(stats.SEED))
        for m in mats:
            row = iqm.loc[(ratio, m)]
            assert row["n"] == 12 and row["iqm"] == pytest.approx(trim_mean(mats[m].ravel(), 0.25))
            assert row["iqm"] != pytest.approx(np.median(mats[m]))
            assert (row["ci_low"], row["ci_high"]) == (pytest.approx(ci[m][0][0]), pytest.approx(ci[m][1][0]))
        for x in ("fisher", "bayes"):
            per_task = [np.mean([(a > b) + 0.5 * (a == b) for a in mats[x][:, k] for b in mats["l1"][:, k]])
                        for k in range(2)]
            assert poi.loc[(ratio, x, "l1"), "p_improve"] == pytest.approx(np.mean(per_task))


def test_a_run_without_flops_does_not_void_the_area_of_the_others():
    """The FLOPs range started at max() over the runs' smallest kept fractions: one run without FLOPs (an old
    result) sorted first made it NaN and dropped every run of the task from the area."""
    df = rows_for({("bayes", 0.5): 100.0, ("fisher", 0.5): 100.0, ("l1", 0.5): 50.0})
    df.loc[(df.metric == "bayes"), "flops_plan"] = np.nan
    auc = stats.auc_table(stats.retained_returns(df)).set_index("metric")
    assert set(auc.index) == {"fisher", "l1"} and auc.loc["fisher", "n"] == 3
    assert "3 run(s) without an area" in " ".join(auc.attrs["notes"])


@pytest.mark.slow
def test_two_experiments_reported_together_through_the_files(tmp_path):
    """The agent key and the training-length split must come through collect_results (they were added to the
    statistics but result.json's checkpoint never reached them: the report still pooled the two agents)."""
    import json

    from report_fixtures import _result

    from pruning.study.report import write_report

    for exp, dense, fisher, l1 in (("exp_a", 800.0, 720.0, 400.0), ("exp_b", 200.0, 100.0, 180.0)):
        for metric, ratio, ret in (("l1", 0.0, dense), ("fisher", 0.5, fisher), ("l1", 0.5, l1)):
            r = {**_result(metric, ratio, 1, ret), "budget": "flops", "flops_plan_dense": 1e9,
                 "flops_plan": 1e9 * (1 - ratio), "checkpoint": f"/nowhere/{exp}/train/checkpoint.pt",
                 "trained_env_steps": 30000}
            d = tmp_path / exp / "prune" / f"{metric}_{ratio}"
            d.mkdir(parents=True)
            (d / "result.json").write_text(json.dumps(r))
    write_report([tmp_path / "exp_a", tmp_path / "exp_b"], tmp_path / "report")
    md = (tmp_path / "report" / "summary.md").read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| 0.5 | fisher |"))
    assert "0.50" in row  # P(fisher > l1) over two agents: {90, 50} vs {50, 90}
    assert "training seed 1 has 2 checkpoints (separate training runs)" in md
