"""Sweep report (pruning/study/report.py, scripts/report.py) from generated fixture files."""

from __future__ import annotations

import importlib.util
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from report_fixtures import RETURNS, _importance, _result
from wandb_records import read_wandb_records, wandb_items

from pruning.study.collect import SETTING_COLUMNS
from pruning.study.report import (
    RESULT_COLUMNS,
    layer_importance,
    pareto_front,
    rank_correlations,
    summarize,
    write_report,
)

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_report_files_numbers_and_plots(sweep, tmp_path):
    out = tmp_path / "report"
    summary = write_report([sweep], out)
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == [*RESULT_COLUMNS, *SETTING_COLUMNS, "run_dir"]
    assert len(results) == 2 * len(RETURNS)
    assert json.loads(results["widths"].iloc[0]) == {"encoder": [128, 64]}
    # Mean ± std (ddof 1) over seeds, retained % of the pooled ratio-0 reference.
    dense_mean = np.mean(RETURNS[("l1", 0.0)])
    row = summary[(summary["metric"] == "fisher") & (summary["ratio"] == 0.5)].iloc[0]
    assert row["return_mean"] == pytest.approx(730.0)
    assert row["return_std"] == pytest.approx(np.std([700.0, 760.0], ddof=1))
    assert row["retained_pct"] == pytest.approx(100 * 730.0 / dense_mean)
    assert row["retained_pct_std"] == pytest.approx(100 * np.std([700.0, 760.0], ddof=1) / dense_mean)
    assert row["flops_plan"] == pytest.approx(1e9 * 0.25 + 1.5e6)
    assert row["n"] == 2
    dense = summary[summary["metric"] == "dense"].iloc[0]
    assert dense["ratio"] == 0 and dense["retained_pct"] == pytest.approx(100.0)
    # Best metric per ratio: fisher at 0.5 (730 > 550), l1 at 0.75 (410 > 320).
    best = summary[summary["best"]].set_index("ratio")["metric"].to_dict()
    assert best == {0.5: "fisher", 0.75: "l1"}
    md = (out / "summary.md").read_text()
    assert "| **fisher** | 0.5 |" in md and "| **l1** | 0.75 |" in md and "| l1 | 0.5 |" in md
    assert "| dense | 0 | 2 | 810.0 ± 14.1 | 100.0 ± 1.7 % |" in md
    assert "Failed jobs (1)" in md and "diverged" in md and "bayes_ratio0.5_seed1" in md
    assert "## Rank correlation between metrics: cartpole-swingup_seed1" in md
    assert "| fisher | 1.00 | 1.00 | -1.00 |" in md  # fisher vs fisher, grad_acc, l1
    for stem in ("pareto_flops_cartpole-swingup", "pareto_latency_cartpole-swingup",
                 "importance_cartpole-swingup_seed1", "rank_correlation_cartpole-swingup_seed1"):
        png = out / f"{stem}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000, stem
        svg = (out / f"{stem}.svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg and svg.rstrip().endswith("</svg>")
        assert f"]({stem}.png)" in md


def test_summary_keeps_finetune_budgets_apart_with_their_own_dense_reference():
    rows = [_result("l1", 0.0, s, r, finetune_steps=0) for s, r in ((1, 500.0), (2, 520.0))]
    rows += [_result("l1", 0.0, s, r, finetune_steps=1000) for s, r in ((1, 800.0), (2, 820.0))]
    rows += [_result("fisher", 0.5, s, r, finetune_steps=ft) for ft, rs in ((0, (300.0, 310.0)), (1000, (700.0, 720.0)))
             for s, r in zip((1, 2), rs)]
    summary = summarize(pd.DataFrame(rows)).set_index(["finetune_steps", "metric"])
    assert summary.loc[(0, "fisher"), "return_mean"] == pytest.approx(305.0)
    assert summary.loc[(0, "fisher"), "retained_pct"] == pytest.approx(100 * 305.0 / 510.0)
    assert summary.loc[(1000, "fisher"), "retained_pct"] == pytest.approx(100 * 710.0 / 810.0)
    # no ratio-0 job: the training run's return (dense_return) is the reference
    alone = summarize(pd.DataFrame([_result("fisher", 0.5, 1, 405.0)]))
    assert alone["retained_pct"].iloc[0] == pytest.approx(50.0) and alone["return_std"].iloc[0] == 0.0


@pytest.mark.slow
def test_failed_jobs_of_every_kind_are_listed_and_not_fatal(sweep, tmp_path):
    base = sweep / "cartpole-swingup_seed1"
    killed = base / "fisher_ratio0.9_seed1"  # a prune job that never wrote result.json
    (killed / ".hydra").mkdir(parents=True)
    (killed / ".hydra" / "config.yaml").write_text("checkpoint: /x/checkpoint.pt\nmetric: fisher\nratio: 0.9\n")
    incomplete = base / "l2_ratio0.5_seed1"
    incomplete.mkdir()
    (incomplete / "result.json").write_text(json.dumps({"task": "cartpole-swingup", "metric": "l2"}))
    garbled = base / "l2_ratio0.5_seed2"
    garbled.mkdir()
    (garbled / "result.json").write_text("{not json")
    sub = sweep / ".submitit" / "17_3"
    sub.mkdir(parents=True)
    with open(sub / "17_3_0_result.pkl", "wb") as f:
        pickle.dump(("error", "Traceback (most recent call last):\n  ...\nValueError: boom\n"), f)
    ok = sweep / ".submitit" / "17_4"
    ok.mkdir(parents=True)
    with open(ok / "17_4_0_result.pkl", "wb") as f:
        pickle.dump(("success", Path("/x")), f)  # needs a class: refused by the reader, not a failure
    train = sweep / "train" / "cartpole-swingup" / "seed2"  # a training run dir is not a failed prune job
    (train / ".hydra").mkdir(parents=True)
    (train / ".hydra" / "config.yaml").write_text("task: cartpole-swingup\nseed: 2\n")
    (train / "importance.parquet").write_bytes(b"PAR1 not really")

    out = tmp_path / "report"
    summary = write_report([sweep], out)
    assert summary["n"].sum() == 2 * len(RETURNS)  # the good results are all there
    md = (out / "summary.md").read_text()
    failed = md[md.index("## Failed jobs (6)"):]
    for text in ("bayes_ratio0.5_seed1` | RuntimeError: diverged", "fisher_ratio0.9_seed1` | NoResult",
                 "l2_ratio0.5_seed1` | IncompleteResult: result.json lacks seed, ratio", "l2_ratio0.5_seed2` | UnreadableResult",
                 "17_3` | SubmititError: ValueError: boom", "seed2` | UnreadableImportance"):
        assert text in failed, text
    assert "17_4" not in md


def test_layer_shares_and_importance_averaged_over_the_seeds_of_a_task(tmp_path):
    sweep = tmp_path / "train"
    scores = {1: {"fisher": np.array([1.0, 2.0, 3.0, 4.0, 4.0, 4.0]), "l1": np.array([3.0, 2.0, 1.0, 1.0, 1.0, 1.0])},
              2: {"fisher": np.array([2.0, 1.0, 3.0, 6.0, 5.0, 7.0]), "l1": np.array([1.0, 2.0, 3.0, 3.0, 2.0, 1.0])}}
    layers = layer_importance(_importance(scores)).set_index(["metric", "layer", "step"])
    # fisher at step 1: encoder mean 2, latent mean 4 -> shares 1/3, 2/3
    assert layers.loc[("fisher", "encoder/0", 1), "share"] == pytest.approx(1 / 3)
    assert layers.loc[("fisher", "latent/0", 2), "share"] == pytest.approx(6 / 8)
    assert layers.groupby(level=["metric", "step"])["share"].sum().to_numpy() == pytest.approx(np.ones(4))

    other = {1: {"fisher": np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0]), "l1": np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])},
             2: {"fisher": np.array([1.0, 2.0, 1.0, 3.0, 1.0, 2.0]), "l1": np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])}}
    for seed, snaps in ((1, scores), (2, other)):
        run = sweep / f"seed{seed}"
        run.mkdir(parents=True)
        _importance(snaps).to_parquet(run / "importance.parquet")
        (run / "config.yaml").write_text(f"task: walker-walk\nseed: {seed}\n")
    out = tmp_path / "report"
    write_report([sweep], out)
    heat = pd.read_csv(out / "importance_walker-walk.csv").set_index(["metric", "layer", "step"])
    assert heat.loc[("fisher", "encoder/0", 1), "share"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    corr = pd.read_csv(out / "rank_correlation_walker-walk.csv").set_index(["metric_a", "metric_b", "step"])
    def spearman(a, b):  # direct, within each layer (channels 0-2 and 3-5), mean over the defined ones
        rhos = [pd.Series(a[sl]).rank().corr(pd.Series(b[sl]).rank()) for sl in (slice(0, 3), slice(3, 6))]
        return np.mean([r for r in rhos if not np.isnan(r)])

    at1, at2 = corr.loc[("fisher", "l1", 1)], corr.loc[("fisher", "l1", 2)]
    # step 1: seed 1's latent layer is constant in fisher (left out), seed 2's fisher is constant everywhere
    assert at1["runs"] == 1
    assert at1["spearman"] == pytest.approx(spearman(scores[1]["fisher"], scores[1]["l1"]))
    assert at2["runs"] == 2 and at2["spearman"] == pytest.approx(
        np.mean([spearman(scores[2]["fisher"], scores[2]["l1"]), spearman(other[2]["fisher"], other[2]["l1"])]))
    # pooled over both layers, seed 1 at step 1 would differ (between-layer scale mixed into the ranks)
    pooled = pd.Series(scores[1]["fisher"]).rank().corr(pd.Series(scores[1]["l1"]).rank())
    assert abs(pooled - at1["spearman"]) > 0.1
    md = (out / "summary.md").read_text()
    assert "Rank correlation between metrics: walker-walk" in md
    assert (out / "importance_walker-walk.png").read_bytes()[:8] == PNG_MAGIC


def test_rank_correlations_are_spearman():
    rows = []
    for metric, scores in (("a", [1, 2, 3, 4]), ("b", [10, 20, 30, 45]), ("c", [4, 3, 2, 1]), ("d", [1, 3, 2, 4])):
        rows += [{"step": 1, "component": "x", "layer": "x/0", "channel": i, "metric": metric, "score": float(s)}
                 for i, s in enumerate(scores)]
    corr = rank_correlations(pd.DataFrame(rows)).set_index(["metric_a", "metric_b"])["spearman"]
    assert corr[("a", "b")] == pytest.approx(1.0)  # monotone, not linear: Spearman sees 1
    assert corr[("a", "c")] == pytest.approx(-1.0)
    assert corr[("a", "d")] == pytest.approx(1 - 6 * 2 / (4 * 15))  # 1 - 6 sum d^2 / (n (n^2 - 1))


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore:An input array is constant")
@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=3, max_size=12))
def test_rank_correlation_matches_scipy_with_ties(pairs):
    stats = pytest.importorskip("scipy.stats")
    a, b = (np.array(x, dtype=float) for x in zip(*pairs))
    rows = [{"step": 7, "component": "c", "layer": "c/0", "channel": i, "metric": m, "score": v}
            for m, vals in (("a", a), ("b", b)) for i, v in enumerate(vals)]
    got = rank_correlations(pd.DataFrame(rows))["spearman"]
    want = stats.spearmanr(a, b).statistic
    if np.isnan(want):
        assert got.isna().all()
    else:
        assert got.iloc[0] == pytest.approx(want)


def test_pareto_front_hand_example():
    cost = [1.0, 2.0, 2.0, 3.0, 4.0, 0.5]
    value = [10.0, 9.0, 12.0, 11.0, 15.0, 5.0]
    # 0.5->5, 1->10, 2->12 (the 9 at equal cost is dominated), 3->11 dominated, 4->15.
    assert pareto_front(cost, value) == [5, 0, 2, 4]
    assert pareto_front([], []) == []
    assert pareto_front([1.0, 2.0, 3.0], [np.nan, 5.0, 6.0]) == [1, 2]  # a NaN mean hides nothing


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=15))
def test_pareto_front_is_exactly_the_undominated_points(points):
    cost, value = (list(map(float, x)) for x in zip(*points))
    front = pareto_front(cost, value)
    n = len(points)
    beaten = [any(cost[j] <= cost[i] and value[j] >= value[i] and (cost[j], value[j]) != (cost[i], value[i])
                  for j in range(n)) for i in range(n)]
    undominated = {(cost[i], value[i]) for i in range(n) if not beaten[i]}
    assert {(cost[i], value[i]) for i in front} == undominated  # every undominated point, once
    assert len(front) == len(undominated)
    assert [cost[i] for i in front] == sorted(cost[i] for i in front)


def _cli():
    spec = importlib.util.spec_from_file_location("report_cli", ROOT / "scripts" / "report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    main = _cli()
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: not a folder:") and "missing" in err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no result.json" in err


@pytest.mark.usefixtures("wandb_env")
def test_cli_wandb_online_without_an_api_key_is_refused_before_the_report(sweep, tmp_path, capsys):
    """It used to compute the report and then end with a RuntimeError traceback (exit 1), naming a training key."""
    out = tmp_path / "rep"
    assert _cli()([str(sweep), "--out", str(out), "--wandb", "online"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: invalid argument --wandb online;") and "--wandb offline" in err
    assert not out.exists()


@pytest.mark.slow
def test_cli_writes_the_report(sweep, tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), str(sweep), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "fisher *" in res.stdout and (tmp_path / "out" / "summary.md").is_file()
    assert len(pd.read_csv(tmp_path / "out" / "results.csv")) == 2 * len(RETURNS)


@pytest.mark.slow
@pytest.mark.usefixtures("wandb_env")
def test_report_logged_to_wandb_offline(sweep, tmp_path):
    """The report run holds the results/summary tables and every plot as an image (read from the offline log)."""
    pytest.importorskip("wandb")
    from pruning.study.experiment import log_report

    out = tmp_path / "report"
    write_report([sweep], out)
    run_id = log_report(out, "offline", group="sweep-x", config={"experiment": {"name": "x"}})
    assert run_id is not None
    [offline] = sorted((out / "wandb").glob("offline-run-*"))
    records = read_wandb_records(offline / f"run-{run_id}.wandb")
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_group == "sweep-x" and run.job_type == "report"
    logged = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            logged.update(wandb_items(r.history.item))
    assert logged["report/results/_type"] == "table-file" and logged["report/summary/_type"] == "table-file"
    for stem in ("pareto_flops_cartpole-swingup", "pareto_latency_cartpole-swingup"):
        assert logged[f"report/{stem}/_type"] == "image-file"
    tables = list((offline / "files" / "media" / "table" / "report").glob("results_*.table.json"))
    assert tables and len(json.loads(tables[0].read_text())["data"]) == 2 * len(RETURNS)


# ------------------------------------------------------------------------------------------ plots


def test_cli_out_that_is_a_file_or_cannot_be_created_exits_2_and_writes_nothing(sweep, tmp_path, capsys):
    main = _cli()
    taken = tmp_path / "taken.txt"
    taken.write_text("keep")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([str(sweep), "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --out") and "an existing file" in err
    assert taken.read_text() == "keep"
    assert main([str(sweep), "--out", str(taken / "report")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be created" in err and str(taken) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not (sweep / "report").exists()


def test_run_dirs_moved_aside_are_kept_but_not_reported(sweep):
    from pruning.study.collect import collect_results

    results, _ = collect_results([sweep])
    job = sweep / "cartpole-swingup_seed1" / "fisher_ratio0.5_seed1"
    old = job.with_name(job.name + ".old-20261202-031500")  # superseded: its checkpoint changed
    shutil.copytree(job, old)
    data = json.loads((old / "result.json").read_text())
    (old / "result.json").write_text(json.dumps({**data, "return_mean": 1.0}))
    again, _ = collect_results([sweep])
    assert len(again) == len(results) and 1.0 not in again["return_mean"].tolist()
    alone, _ = collect_results([old])  # given as the folder itself, it is reported
    assert alone["return_mean"].tolist() == [1.0]


def _job(metric: str, ratio: float, seed: int, ret: float, **prune) -> dict:
    """A result.json row whose ``config.prune`` holds ``prune`` (the settings of SETTING_COLUMNS)."""
    return {**_result(metric, ratio, seed, ret), "config": {"prune": {"normalize_by": None, **prune}}}


def test_jobs_that_differ_in_a_prune_setting_are_labelled_apart_not_pooled(tmp_path):
    from pruning.study.collect import collect_results
    from pruning.study.variants import base_metric, label_variants

    root = tmp_path / "sweep"
    jobs = [_job("l1", 0.0, s, 800.0) for s in (1, 2)]
    jobs += [_job(m, 0.5, s, r, normalize_by=by) for s in (1, 2)
             for m, by, r in (("fisher", "component", 600.0), ("fisher", "group", 100.0), ("l1", "component", 500.0))]
    for i, data in enumerate(jobs):
        (root / f"job{i}").mkdir(parents=True)
        (root / f"job{i}" / "result.json").write_text(json.dumps(data))
    results, _ = collect_results([root, root / "job3"])  # an overlapping folder: its job is read once
    assert len(results) == len(jobs) and results["normalize_by"].iloc[2] == "component"
    labelled = label_variants(results)
    assert sorted(set(labelled.loc[labelled.ratio > 0, "metric"])) == [
        "fisher [normalize_by=component]", "fisher [normalize_by=group]", "l1 [normalize_by=component]"]
    assert set(labelled.loc[labelled.ratio == 0, "metric"]) == {"l1"}  # dense references: no setting applies
    assert base_metric("fisher [normalize_by=group]") == "fisher"
    summary = summarize(labelled).set_index("metric")
    assert summary.loc["fisher [normalize_by=group]", "n"] == 2
    assert summary.loc["fisher [normalize_by=group]", "return_mean"] == pytest.approx(100.0)
    assert summary.loc["fisher [normalize_by=component]", "return_mean"] == pytest.approx(600.0)
    unchanged = label_variants(results[results["normalize_by"] != "group"])
    assert set(unchanged["metric"]) == {"l1", "fisher"}  # nothing varies: labels stay the metric names


def test_a_task_with_two_model_sizes_is_reported_as_two():
    from pruning.study.variants import label_variants

    rows = [_result("fisher", 0.5, 1, 400.0), {**_result("fisher", 0.5, 1, 900.0), "model_size": "5"}]
    tasks = label_variants(pd.DataFrame(rows))["task"].tolist()
    assert tasks == ["cartpole-swingup (model_size cpu)", "cartpole-swingup (model_size 5)"]


def test_summary_counts_jobs_with_a_return_and_has_no_retained_share_of_a_negative_reference():
    rows = [_result("l1", 0.0, 1, 800.0), _result("fisher", 0.5, 1, 700.0), _result("fisher", 0.5, 2, float("nan")),
            _result("fisher", 0.5, 3, 100.0)]
    fisher = summarize(pd.DataFrame(rows)).set_index("metric").loc["fisher"]
    assert fisher["n"] == 2 and fisher["return_mean"] == pytest.approx(400.0)  # the NaN job is not a run
    negative = [{**_result("l1", 0.0, 1, -150.0), "dense_return": -150.0}, _result("fisher", 0.5, 1, -302.0)]
    assert summarize(pd.DataFrame(negative))["retained_pct"].isna().all()


def test_summary_counts_runs_not_jobs():
    """The ratio-0 job of every metric of one seed was counted as three dense runs ("n = 3, 189.5 ± 0.0"), and a
    job run again into another folder as a second seed. Repeated jobs of a run are averaged first."""
    rows = [_result(m, 0.0, 1, 800.0) for m in ("fisher", "l1", "random")] + [_result("l1", 0.0, 2, 700.0)]
    rows += [_result("l1", 0.5, 1, 600.0), _result("l1", 0.5, 1, 620.0), _result("l1", 0.5, 2, 400.0)]
    summary = summarize(pd.DataFrame(rows)).set_index("metric")
    dense, l1 = summary.loc["dense"], summary.loc["l1"]
    assert dense["n"] == 2 and dense["return_mean"] == pytest.approx(750.0)
    assert dense["return_std"] == pytest.approx(np.std([800.0, 700.0], ddof=1))
    assert l1["n"] == 2 and l1["return_mean"] == pytest.approx((610.0 + 400.0) / 2)
    assert l1["return_std"] == pytest.approx(np.std([610.0, 400.0], ddof=1))


def test_summary_states_how_equal_the_flops_budget_was_and_warns_past_one_percent():
    from pruning.study.tables import flops_spread, summary_markdown

    rows = [{**_result(m, 0.5, 1, 500.0), "budget": "flops", "flops_plan": f} for m, f in (("fisher", 1000.0),
                                                                                           ("l1", 995.0))]
    summary = summarize(pd.DataFrame(rows))
    assert flops_spread(summary) == pytest.approx(0.005)
    md = summary_markdown(summary, pd.DataFrame(columns=["run_dir", "error", "message"]))
    assert "differ by at most 0.5%" in md and "**Warning**: at some `flops` ratio" not in md
    rows[1]["flops_plan"] = 900.0
    md = summary_markdown(summarize(pd.DataFrame(rows)), pd.DataFrame(columns=["run_dir", "error", "message"]))
    assert "**Warning**: at some `flops` ratio the metrics' planned-action FLOPs differ by 10.0%" in md


def test_a_result_whose_source_checkpoint_changed_is_listed_not_reported(tmp_path):
    """A main job re-run after its training run went on used to report prune jobs of the old checkpoint next to
    the new dense reference (exit 0, "best"); the job's run.json records the source checkpoint's sha256."""
    from pruning.study.collect import collect_results
    from tdmpc.run_dir import file_sha256

    ckpt = tmp_path / "train" / "checkpoint.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"the 2000-step model")
    old_sha = file_sha256(ckpt)
    for metric in ("fisher", "l1"):
        d = tmp_path / "prune" / metric
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({**_result(metric, 0.5, 1, 500.0), "checkpoint": str(ckpt)}))
        (d / "run.json").write_text(json.dumps({"kind": "prune", "source_sha256": old_sha}))
    ckpt.write_bytes(b"the 3000-step model")  # training went on; l1 is re-run from it, fisher is not
    (tmp_path / "prune" / "l1" / "run.json").write_text(json.dumps({"kind": "prune", "source_sha256": file_sha256(ckpt)}))
    results, failures = collect_results([tmp_path / "prune"])
    assert list(results["metric"]) == ["l1"]
    assert list(failures["error"]) == ["StaleResult"] and failures["run_dir"].iloc[0].endswith("fisher")
    assert "has changed since this job ran" in failures["message"].iloc[0]
    ckpt.unlink()  # a checkpoint that is gone cannot be checked: kept
    assert sorted(collect_results([tmp_path / "prune"])[0]["metric"]) == ["fisher", "l1"]


def test_a_folder_given_twice_counts_each_run_once(sweep, tmp_path, monkeypatch):
    """Overlapping folders (a sweep and its subfolder, or one folder as a relative and an absolute path) used to
    list a failed job twice and weigh a training run's importance twice."""
    from pruning.study.collect import collect_results, find_importance

    monkeypatch.chdir(sweep.parent)
    dirs = [sweep, Path(sweep.name), sweep / "train", Path(sweep.name) / "cartpole-swingup_seed1"]
    results, failures = collect_results(dirs)
    assert len(results) == 2 * len(RETURNS) and len(failures) == 1  # bayes_ratio0.5_seed1, once
    assert len(find_importance(dirs)) == 1


def test_a_report_killed_while_it_computes_leaves_the_previous_report_whole(sweep, tmp_path, monkeypatch):
    """Files were written one by one into the report folder: a report killed half-way left a results.csv that
    contradicted the previous summary.md. Now they are built in a staging folder and moved in at the end; files
    of the previous report that the new one does not write are removed, a user's own files are not."""
    import pruning.study.report as report

    out = tmp_path / "report"
    write_report([sweep], out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert json.loads((out / ".report_files.json").read_text()) == sorted(n for n in before if not n.startswith("."))
    (out / "pareto_flops_gone-task.png").write_bytes(b"old")  # as if the previous report had a task more
    (out / "notes.txt").write_text("mine")
    listed = json.loads((out / ".report_files.json").read_text()) + ["pareto_flops_gone-task.png"]
    (out / ".report_files.json").write_text(json.dumps(listed))

    def killed(results, failures, runs, staging):
        results.iloc[:1].to_csv(staging / "results.csv", index=False)
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "_write_files", killed)
    with pytest.raises(KeyboardInterrupt):
        write_report([sweep / "cartpole-swingup_seed1"], out)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k in before and k != ".report_files.json"} == \
        {k: v for k, v in before.items() if k != ".report_files.json"}
    assert not list(out.glob(".report-staging-*")) and not (out / ".report_incomplete").exists()
    monkeypatch.undo()
    write_report([sweep], out)
    assert not (out / "pareto_flops_gone-task.png").exists() and (out / "notes.txt").read_text() == "mine"
    assert (out / "results.csv").read_bytes() == before["results.csv"]


def test_report_cli_names_an_input_that_is_not_a_folder(tmp_path, capsys):
    """It used to complain about --out (built from the first input) although no --out was given."""
    spec = importlib.util.spec_from_file_location("report_cli", Path(__file__).resolve().parents[1] / "scripts" / "report.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert cli.main([str(afile)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: not a folder: {afile}"]


def test_a_staging_folder_left_under_a_reused_pid_does_not_stop_the_report(sweep, tmp_path):
    """Pids repeat (containers): a killed report's ``.report-staging-<pid>`` made every later report fail."""
    import os

    out = tmp_path / "report"
    (out / f".report-staging-{os.getpid()}").mkdir(parents=True)
    write_report([sweep], out)
    assert (out / "summary.md").is_file()


def test_ctrl_c_while_the_report_is_computed_is_one_line_and_exit_130(sweep, tmp_path):
    """A Ctrl-C while plotting ended with a traceback (report.py caught ReportError only)."""
    import subprocess
    import sys

    code = ("import runpy, sys\nimport pruning.study.report as r\n"
            "def interrupted(*a, **k):\n    raise KeyboardInterrupt\n"
            "r.write_report = interrupted\n"
            f"sys.argv = ['report.py', {str(sweep)!r}, '--out', {str(tmp_path / 'rep')!r}]\n"
            f"runpy.run_path({str(Path(__file__).resolve().parents[1] / 'scripts' / 'report.py')!r}, run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr == "interrupted: the report was not (completely) published; run the command again\n"
