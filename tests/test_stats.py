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
    assert set(auc.index) == {"fisher", "l1"} and list(auc["n"]) == [1, 1]  # the common run: seed 3

    def hand(seed):  # points (0.5, y50), (0.75, y25), (1, 100) over the range [0.5, 1]
        y25, y50 = 100 * (150 + seed) / 200, 100 * (100 + seed) / 200
        return (0.25 * (y50 + y25) / 2 + 0.25 * (y25 + 100) / 2) / 0.5
    assert auc.loc["fisher", "auc"] == pytest.approx(hand(3)) and auc.loc["l1", "auc"] == pytest.approx(hand(3))
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
    scores, n, left = stats.score_matrices(stats.retained_returns(df))
    assert n == 2 and left == []  # seeds 1 and 3 are common to both metrics
    np.testing.assert_allclose(scores["fisher"].ravel(), [50.5, 51.5])
