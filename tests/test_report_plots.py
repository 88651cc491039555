"""The report's plots (pruning/study/plots.py, control_rate.py, importance_report.py): readable axes, shared\ncolour scales, latency spread, control-rate lines; from generated fixture files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import RETURNS, _importance, _result

from pruning.study.report import (
    layer_importance,
    write_report,
)

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _visible_labels(ax, which: str = "x") -> list[str]:
    """The non-empty major tick labels inside the axis' view (after drawing the figure)."""
    ax.figure.canvas.draw()
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(axis.get_view_interval())
    ticks = axis.get_major_ticks()
    return [t.label1.get_text() for t, loc in zip(ticks, axis.get_majorticklocs())
            if lo <= loc <= hi and t.label1.get_text()]


def test_cost_axes_log_only_over_a_decade_and_always_labelled():
    from pruning.study.plots import cost_axis, figure

    fig, axes = figure(4, 3)
    ax = axes[0, 0]
    ax.plot([63.0, 1000.0], [0, 1])  # MFLOP over 1.2 decades
    assert cost_axis(ax, "x", 63.0, 1000.0) == "log"
    labels = _visible_labels(ax)
    assert len(labels) >= 3 and len(set(labels)) == len(labels)  # 100, 200, 500, 1,000 (not only 10^2, 10^3)
    assert {"100", "200", "500", "1,000"} <= set(labels)
    fig, axes = figure(4, 3)
    ax = axes[0, 0]
    ax.plot([11.0, 11.6], [0, 1])  # a small run's latencies: < 1 decade -> linear, plain labels
    assert cost_axis(ax, "x", 11.0, 11.6) == "linear"
    labels = _visible_labels(ax)
    assert len(labels) >= 3 and len(set(labels)) == len(labels)
    assert all("×" not in s and "e" not in s for s in labels)
    values = [float(s) for s in labels]
    assert values == sorted(values) and 11.0 <= values[0] and values[-1] <= 11.6


def test_pareto_plots_label_ticks_show_latency_iqr_and_n(sweep):
    from pruning.study.collect import collect_results
    from pruning.study.plots import PARETO_AXES, pareto_figure

    results, _ = collect_results([sweep])
    flops_axis, latency_axis = PARETO_AXES
    fig = pareto_figure(results, "cartpole-swingup", *flops_axis[:3], flops_axis[4])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"  # 63-1001 MFLOP: more than a decade
    assert len(_visible_labels(ax)) >= 3
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "fisher (n = 2)" in legend and "l1 (n = 2)" in legend and "dense (n = 2)" in legend
    fig = pareto_figure(results, "cartpole-swingup", *latency_axis[:3], latency_axis[4])
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear"  # 30-90 ms
    assert len(_visible_labels(ax)) >= 3
    # horizontal bars of the jobs: median ± IQR / 2 (IQR 1.0 ms in the fixture)
    segments = [seg for coll in ax.collections if hasattr(coll, "get_segments") for seg in coll.get_segments()]
    widths = [abs(s[1][0] - s[0][0]) for s in segments if len(s) == 2 and abs(s[1][1] - s[0][1]) < 1e-9]
    assert widths and np.allclose(widths, 1.0)


def test_heat_map_panels_share_one_colour_scale_and_readable_layer_names():
    from pruning.study.importance_report import importance_figure, layer_labels

    scores = {1: {"fisher": np.array([1.0, 2.0, 3.0, 40.0, 40.0, 40.0]), "random": np.ones(6)},
              2: {"fisher": np.array([2.0, 1.0, 3.0, 60.0, 50.0, 70.0]), "random": np.ones(6)}}
    layers = layer_importance(_importance(scores))
    fig, images = importance_figure("t", layers, "env step")
    assert len(images) == 2
    norms = {(im.norm.vmin, im.norm.vmax) for im in images}
    assert len(norms) == 1  # one scale for every panel
    vmin, vmax = norms.pop()
    assert vmax == pytest.approx(layers["share"].max())  # fisher's latent share 60 / 62
    assert vmin == pytest.approx(layers["share"].min())  # fisher's encoder share at step 2: 2 / 62
    assert fig.axes[1].get_xlabel() == "env step (snapshot)"
    assert layer_labels(["encoder/0", "encoder/3", "qs/0/0", "qs/0/4", "qs/1/0", "latent"]) == [
        "encoder/0 · encoder, hidden 1", "encoder/3 · encoder, hidden 2", "qs/0/0 · Q-member 0, hidden 1",
        "qs/0/4 · Q-member 0, hidden 2", "qs/1/0 · Q-member 1, hidden 1", "latent · shared"]
    assert any("Q-ensemble member 1" in t.get_text() for t in fig.texts)


@pytest.mark.slow
def test_importance_steps_are_env_steps_when_the_run_finished(sweep, tmp_path):
    train = sweep / "train" / "cartpole-swingup" / "seed1"
    (train / "summary.json").write_text(json.dumps({"env_step": 12000, "updates": 1500}))
    out = tmp_path / "report"
    write_report([sweep], out)
    heat = pd.read_csv(out / "importance_cartpole-swingup_seed1.csv")
    assert sorted(heat["step"].unique()) == [4000, 8000, 12000]  # updates 500, 1000, 1500 x 8
    corr = pd.read_csv(out / "rank_correlation_cartpole-swingup_seed1.csv")
    assert sorted(corr["step"].unique()) == [4000, 8000, 12000]


@pytest.mark.slow
def test_control_rate_points_plot_and_summary_line(sweep, tmp_path):
    from pruning.study.collect import collect_results
    from pruning.study.control_rate import REFERENCE_HZ, control_rate_figure, control_rate_points

    results, _ = collect_results([sweep])
    points = control_rate_points(results).set_index(["metric", "ratio"])
    for (metric, ratio), rets in RETURNS.items():
        key = ("dense" if ratio == 0 else metric, ratio)
        latency = 80 * (1 - ratio) + 10  # every seed of the fixture: the same latency
        assert points.loc[key, "hz"] == pytest.approx(1000 / latency)
        assert points.loc[key, "n"] == 2
        if ratio > 0:  # retained: per seed, its own dense reference (800 / 820), median of the two
            want = np.median([100 * r / d for r, d in zip(rets, RETURNS[("l1", 0.0)])])
            assert points.loc[key, "retained"] == pytest.approx(want)
    assert points.loc[("dense", 0.0), "retained"] == 100.0
    untimed = results.assign(latency_plan_ms=results["latency_plan_ms"].where(results["ratio"] > 0))  # dense untimed
    still = control_rate_points(untimed).set_index(["metric", "ratio"])
    assert ("dense", 0.0) not in still.index  # not plotted without a latency, but still the reference:
    assert still.loc[("fisher", 0.5), "retained"] == pytest.approx(points.loc[("fisher", 0.5), "retained"])
    fig = control_rate_figure(points.reset_index().assign(task="cartpole-swingup"), "cartpole-swingup", "batch 1")
    ax = fig.axes[0]
    series = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar containers: (data line, caps, bars)
    assert set(series) == {"fisher (n = 2)", "l1 (n = 2)"}
    fisher = series["fisher (n = 2)"]
    assert np.allclose(fisher.get_xdata(), 1000 / (80 * (1 - np.array([0.5, 0.75])) + 10))  # sorted by Hz
    assert np.allclose(fisher.get_ydata(), [points.loc[("fisher", r), "retained"] for r in (0.5, 0.75)])
    reference = sorted(ln.get_xdata()[0] for ln in ax.get_lines() if (ln.get_gid() or "").startswith("reference"))
    assert reference == list(REFERENCE_HZ)
    assert ax.get_xscale() == "log" and len(_visible_labels(ax)) >= 3
    lo, hi = ax.get_xlim()
    assert lo < 50 and hi > 300  # every reference line is in view

    out = tmp_path / "report"
    write_report([sweep], out)
    for ext in ("png", "svg", "csv"):
        assert (out / f"control_rate_cartpole-swingup.{ext}").is_file()
    assert "[control_rate_cartpole-swingup.png](control_rate_cartpole-swingup.png)" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_slower_than_dense_is_warned_in_summary_and_printed(tmp_path, capsys):
    root = tmp_path / "sweep"
    for metric, ratio, latency in (("l1", 0.0, 20.0), ("fisher", 0.5, 25.0), ("l1", 0.5, 12.0)):
        d = root / f"{metric}_{ratio}"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({**_result(metric, ratio, 1, 500.0), "latency_plan_ms": latency}))
    out = tmp_path / "report"
    write_report([root], out)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "fisher ratio 0.5" in err and "25.00 ms > dense 20.00 ms" in err
    md = (out / "summary.md").read_text()
    assert "**Warning**: cartpole-swingup fisher ratio 0.5" in md and "l1 ratio 0.5" not in md.split("## ")[0]


def test_latency_setting_names_threads_and_clock():
    from pruning.study.plots import latency_setting

    one = pd.DataFrame({"latency_threads": [1, 1.0], "latency_clock": ["thread", "thread"]})
    assert latency_setting(one) == "batch 1, 1 thread, thread clock"
    mixed = pd.DataFrame({"latency_threads": [1, 4], "latency_clock": ["thread", "wall"]})
    assert latency_setting(mixed) == "batch 1, 1 / 4 threads, thread / wall clock"
    assert latency_setting(pd.DataFrame({"x": [1]})) == "batch 1"  # results written before these fields


def test_plots_keep_fine_tuning_lengths_apart_as_the_tables_do(tmp_path):
    """fisher at ratio 0.5 after 0 and after 5 000 fine-tuning steps: two points and two files, each against
    its own dense reference, not one pooled point (n = 4, 55 % retained)."""
    from pruning.study.control_rate import control_rate_points, plot_control_rate
    from pruning.study.plots import plot_pareto
    from pruning.study.variants import comparable_sets

    rows = [_result("l1", 0.0, s, r, finetune_steps=ft) for ft, rs in ((0, (800.0, 820.0)), (5000, (800.0, 820.0)))
            for s, r in zip((1, 2), rs)]
    rows += [_result("fisher", 0.5, s, r, finetune_steps=ft) for ft, r in ((0, 200.0), (5000, 700.0)) for s in (1, 2)]
    results = pd.DataFrame(rows)
    sets = list(comparable_sets(results))
    assert [(title, suffix, len(jobs)) for _, title, suffix, jobs in sets] == [
        ("cartpole-swingup (budget channels, scope global, 0 fine-tuning steps)", "_channels_global_ft0", 4),
        ("cartpole-swingup (budget channels, scope global, 5000 fine-tuning steps)", "_channels_global_ft5000", 4)]
    retained = [control_rate_points(jobs).set_index("metric").loc["fisher", "retained"] for *_, jobs in sets]
    assert retained == pytest.approx([np.median([100 * 200 / 800, 100 * 200 / 820]),  # each against its own
                                      np.median([100 * 700 / 800, 100 * 700 / 820])])  # fine-tuned dense
    names = sorted(p.name for p in [*plot_pareto(results, tmp_path), *plot_control_rate(results, tmp_path)])
    assert "control_rate_cartpole-swingup_channels_global_ft5000.png" in names
    assert "pareto_flops_cartpole-swingup_channels_global_ft0.svg" in names and len(names) == 12
    one = [r for r in rows if r["finetune_steps"] == 0]
    assert [suffix for *_, suffix, _ in comparable_sets(pd.DataFrame(one))] == [""]  # one set: names as before
