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
