"""The benchmarks' shared argv parser and the removal-vs-zeroing measurement on a tiny checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.argv import ArgvError, parse_args, split_args  # noqa: E402


def test_parse_args_converts_to_the_defaults_types(capsys):
    d = {"repeats": 30, "min_run_time": 1.0, "latent": True, "out": "x.json"}
    assert parse_args(["repeats=5", "latent=false", "min_run_time=0.5"], d) == {
        "repeats": 5, "min_run_time": 0.5, "latent": False, "out": "x.json"}
    for bad, text in ((["repeat=5"], "unknown argument 'repeat=5'; allowed keys: repeats, min_run_time, latent, out"),
                      (["repeats"], "unknown argument 'repeats'; allowed keys: repeats, min_run_time, latent, out"),
                      (["repeats=five"], "invalid argument repeats='five'; allowed: an integer"),
                      (["latent=maybe"], "invalid argument latent='maybe'; allowed: true|false")):
        with pytest.raises(SystemExit) as err:
            parse_args(bad, d)
        assert err.value.code == 2
        assert capsys.readouterr().err.strip() == f"error: {text}"


def test_passthrough_keeps_unknown_keys_as_strings_and_split_args_raises():
    d = {"task": "cartpole-swingup", "steps": "100000"}
    assert parse_args(["steps=5", "model.mlp_dim=64"], d, passthrough=True) == {
        "task": "cartpole-swingup", "steps": "5", "model.mlp_dim": "64"}
    assert split_args(["a=1", "b=x=y", "a=2"], ["a", "b"]) == {"a": "2", "b": "x=y"}
    with pytest.raises(ArgvError, match=r"^unknown argument 'c=1'; allowed keys: a, b$"):
        split_args(["c=1"], ["a", "b"])


@pytest.mark.parametrize(("module", "defaults", "argv", "expected"), [
    ("train_speed", "DEFAULTS", ["threads=1", "min_run_time=0.5"], {"threads": 1, "min_run_time": 0.5, "sizes": "cpu,5"}),
    ("prune_latency", "DEFAULTS", ["latent=0,1", "profile=0", "rounds=3"],
     {"latent": "0,1", "profile": False, "rounds": 3, "threads": 1}),
    ("deploy_latency", "DEFAULTS", ["latent=0", "repeats=7", "budget=channels"],
     {"latent": False, "repeats": 7, "budget": "channels", "rounds": 5}),
])
def test_each_benchmark_parses_its_documented_keys(module, defaults, argv, expected):
    import importlib

    mod = importlib.import_module(f"benchmarks.{module}")
    args = parse_args(argv, getattr(mod, defaults))
    assert {k: args[k] for k in expected} == expected


def test_deploy_latency_refuses_a_bad_budget_with_exit_2(capsys):
    from benchmarks.deploy_latency import parse

    with pytest.raises(SystemExit) as err:
        parse(["budget=params"])
    assert err.value.code == 2
    assert capsys.readouterr().err.strip() == "error: invalid argument budget='params'; allowed: flops|channels"


@pytest.mark.slow
def test_removal_vs_zeroing_on_a_tiny_checkpoint(tracked_checkpoint, tmp_path):
    from benchmarks.removal_vs_zeroing import DEFAULTS, main

    out = main({**DEFAULTS, "checkpoint": str(tracked_checkpoint), "metrics": "l2,fisher", "ratios": "0.5",
                "episodes": 1, "out": str(tmp_path / "r.json")})
    assert [(r["metric"], r["ratio"]) for r in out["rows"]] == [("l2", 0.5), ("fisher", 0.5)]
    for r in out["rows"]:
        assert r["dense"] == out["rows"][0]["dense"]  # the same dense agent and episodes every time
        assert r["removed"] != r["zeroed"]  # LayerNorm statistics differ between removal and masking
    assert (tmp_path / "r.json").is_file()


def test_learning_curve_compare_equals_a_hand_computation():
    import numpy as np

    from benchmarks.learning_curve_compare import compare, permutation_p

    a = np.array([[100.0, 500, 800], [200, 600, 900], [150, 400, 850]])
    b = np.array([[120.0, 700, 820], [90, 450, 880], [160, 550, 860]])
    out = compare(a, b)
    # b's mean (123.3, 566.7, 853.3) vs a's range [100, 200], [400, 600], [800, 900]: all inside
    assert out["b_mean_in_a_range"] == [True, True, True]
    # b seeds: 120 in, 90 out, 160 in | 700 out, 450 in, 550 in | all three in -> 7 of 9
    assert out["b_seeds_in_a_range"] == pytest.approx(7 / 9)
    # a's seeds held out: seed 0 vs range of seeds 1-2 ([150, 200], [400, 600], [850, 900]): out, in, out;
    # seed 1 vs [100, 150], [400, 500], [800, 850]: out x3; seed 2 vs [100, 200], [500, 600], [800, 900]: in, out, in
    assert out["a_loo_in_a_range"] == pytest.approx(3 / 9)
    assert out["curve_mean"]["a"] == pytest.approx(a.mean())
    assert out["final"]["b"] == pytest.approx(2560 / 3)
    # permutation test: 20 splits of 6 values; identical sets give p = 1, fully separated ones 2/20
    assert permutation_p(np.array([1.0, 2, 3]), np.array([1.0, 2, 3])) == 1.0
    assert permutation_p(np.array([1.0, 2, 3]), np.array([10.0, 11, 12])) == pytest.approx(0.1)


def test_tracking_overhead_paired_statistic_is_the_median_of_per_repeat_ratios():
    from benchmarks.tracking_overhead import _paired

    # per-repeat overheads: +10 %, +5 %, +20 %, 0 %, +5 %  -> median +5 %
    without = [100.0, 200.0, 50.0, 80.0, 120.0]
    with_ = [110.0, 210.0, 60.0, 80.0, 126.0]
    out = _paired(with_, without, resamples=500)
    assert out["median_pct"] == pytest.approx(5.0)
    assert out["repeats"] == 5
    lo, hi = out["ci95_pct"]
    assert 0.0 <= lo <= 5.0 <= hi <= 20.0  # a bootstrap median lies within the sample's range
    # a ratio of medians would say (110 / 100 - 1) = +10 % here: the paired statistic is not that
    assert out["median_pct"] != pytest.approx(100 * (sorted(with_)[2] / sorted(without)[2] - 1))


def test_tracking_overhead_parts_split_the_overhead_by_medians():
    from benchmarks.tracking_overhead import _parts

    # seconds per update; medians (ms): without 50, probes 51, capture 53, with 54.5
    wall = {"without": [0.049, 0.050, 0.052], "probes": [0.051, 0.050, 0.053],
            "capture": [0.053, 0.054, 0.052], "with": [0.0545, 0.0560, 0.0540]}
    out = _parts(wall)
    assert out["split_ms"] == pytest.approx({"probes": 1.0, "products": 2.0, "step": 1.5})
    # the three parts add up to the overhead of the full block
    assert sum(out["split_ms"].values()) == pytest.approx(out["with"]["median_ms"] - 50.0)
    # per-repeat overheads of "capture": +8.16 %, +8 %, 0 % -> median +8 %
    assert out["capture"]["overhead_paired"]["median_pct"] == pytest.approx(8.0)
    assert "without" not in out


def test_tracking_overhead_hooks_every_gate_update_of_the_with_blocks_and_warms_one_up():
    """With gate_interval > 1 a "with" block that follows a "without" block must still capture its gate
    updates (a "without" block turns the hooks off), and the warm-up must reach one gate update (the compiled
    update's hooked graph is compiled there, not in a timed block)."""
    from types import SimpleNamespace

    from benchmarks.tracking_overhead import _interleaved

    class Tracker:  # the capture switch of ImportanceTracker.step with gate_interval=3, interval=1
        def __init__(self):
            self.cfg, self.capturing, self.gates, self.log = SimpleNamespace(gate_interval=3, interval=1), False, None, []

        def set_capture(self, on):
            self.capturing = on

        def step(self, update):
            self.log.append((update, self.capturing))
            self.capturing = (update + 1) % 3 == 0

    tracker = Tracker()
    agent = SimpleNamespace(update=lambda batch: None)
    buf = SimpleNamespace(sample=lambda n, rng: None)
    cfg = SimpleNamespace(optim=SimpleNamespace(batch_size=1))
    _interleaved(agent, buf, cfg, tracker, repeats=6, number=2)
    warmup, timed = tracker.log[:3], tracker.log[3:]
    assert [u for u, _ in warmup] == [1, 2, 3]  # two warm-up "with" updates, then up to the gate update 3
    assert all(on == (u % 3 == 0) for u, on in tracker.log)  # hooks on exactly at the gate updates
    assert len(timed) == 12 and any(on for _, on in timed)


def test_tracking_overhead_parts_refuses_the_compiled_update_and_sparse_gates(capsys):
    from benchmarks.tracking_overhead import main

    for bad in (["parts=true", "compile=true"], ["parts=true", "gate_interval=10"]):
        with pytest.raises(SystemExit) as e:
            main(bad)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: invalid argument parts=True")


def test_cpu_steal_reads_the_8th_field_of_the_cpu_line():
    from benchmarks.cpu_steal import cpu_ticks, steal_pct

    before = "cpu  100 5 50 800 10 1 2 32 7 0\ncpu0 50 2 25 400 5 0 1 16 3 0\nintr 1 2\n"
    after = "cpu  200 5 90 900 10 1 2 92 9 0\ncpu0 99 2 45 450 5 0 1 46 4 0\n"
    # user nice system idle iowait irq softirq steal (guest, guest_nice are inside user/nice: not summed)
    assert cpu_ticks(before) == (32, 1000) and cpu_ticks(after) == (92, 1300)
    assert steal_pct(cpu_ticks(before), cpu_ticks(after)) == pytest.approx(100 * 60 / 300)
    assert cpu_ticks("cpu  1 2 3 4 5 6 7\n") is None  # a kernel without the steal field
    assert steal_pct(None, (1, 2)) is None and steal_pct((5, 10), (5, 10)) is None
    live = cpu_ticks()
    assert live is None or (0 <= live[0] <= live[1])


def test_machine_busy_is_a_median_load_above_1_5_or_steal_above_10_pct():
    from benchmarks.cpu_steal import machine_busy

    assert not machine_busy([1.0, 1.2, 3.0], None)  # median 1.2: one outlying round does not count
    assert machine_busy([1.0, 1.6, 3.0], None)  # median 1.6
    assert not machine_busy([1.0], 10.0) and machine_busy([1.0], 10.5)


@pytest.mark.slow
def test_deploy_rate_times_every_exported_model_of_a_sweep(tracked_checkpoint, tmp_path):
    """Two prune jobs (the dense reference and fisher at 50 % of the FLOPs) exported and timed in onnxruntime."""
    import json

    from benchmarks.deploy_rate import main
    from pruning.study.prune_job import PruneJobConfig, run_prune_job

    results = {}
    for metric, ratio in (("l1", 0.0), ("fisher", 0.5)):
        job = PruneJobConfig(checkpoint=str(tracked_checkpoint), metric=metric, ratio=ratio, finetune_steps=250,
                             eval_episodes=1, latency_min_run_time=0.05, num_threads=1)
        job.logger.wandb.mode, job.logger.progress = "disabled", False
        results[metric] = run_prune_job(job, tmp_path / "prune" / metric)
    main([f"runs={tmp_path / 'prune'}", "repeats=3", "rounds=2", f"out={tmp_path / 'out'}"])
    out = json.loads((tmp_path / "out" / "deploy_rate_cartpole-swingup.json").read_text())
    models = {m["metric"]: m for m in out["models"]}
    assert set(models) == {"l1", "fisher"} and out["runtime"] == "onnxruntime"
    for metric, m in models.items():
        assert m["latency_plan_ms_torch"] == results[metric]["latency_plan_ms"]  # the prune job's own figure
        assert m["flops_plan"] == results[metric]["flops_plan"]
        assert m["latency_plan_ms"] > 0 and m["rate_plan_hz"] == pytest.approx(1000 / m["latency_plan_ms"])
        assert m["p99_plan_ms"] >= m["latency_plan_ms"]
    assert models["l1"]["retained"] == 100.0
    assert models["fisher"]["retained"] == pytest.approx(
        100 * results["fisher"]["return_mean"] / results["l1"]["return_mean"])
    assert len(out["load_average_rounds"]) == 2
    points = {p["metric"]: p for p in out["points"]}
    assert points["fisher"]["hz"] == pytest.approx(models["fisher"]["rate_plan_hz"])  # one run: its own median
    for ext in ("png", "svg", "csv"):
        assert (tmp_path / "out" / f"deploy_rate_cartpole-swingup.{ext}").stat().st_size > 0


@pytest.mark.slow
def test_ort_mish_exports_the_agent_formula_as_seven_nodes_and_nn_mish_as_one(tmp_path):
    """The two graphs ``benchmarks/ort_mish.py`` compares: what ``planner.onnx`` holds for every Mish (the agent's
    formula) and ONNX's ``Mish`` operator; both compute Mish to float32 rounding in onnxruntime."""
    import json

    import numpy as np

    from benchmarks.ort_mish import export_variants, main

    variants = export_variants(4, 6, tmp_path)
    assert variants["agent_formula"]["nodes"] == ["Clip", "Exp", "Add", "Mul", "Add", "Div", "Mul"]
    assert variants["onnx_mish"]["nodes"] == ["Mish"] and variants["onnx_mish"]["opset"] >= 18
    out = main(["rows=4", "width=6", "repeats=2", "rounds=1", f"out={tmp_path / 'm.json'}"])
    assert json.loads((tmp_path / "m.json").read_text())["rows"] == 4
    for row in out["results"]:
        assert row["max_abs_err"] < 1e-5 and row["median_us"] > 0  # inputs up to |x| ~ 9: float32 rounding
    assert out["onnx_mish_over_agent_formula"] == pytest.approx(
        out["results"][1]["median_us"] / out["results"][0]["median_us"])
    assert np.isfinite(out["onnx_mish_over_agent_formula"])


def test_deploy_rate_writes_one_file_set_per_runtime():
    from benchmarks.deploy_rate import output_stem

    assert output_stem("cartpole-swingup", "onnxruntime") == "deploy_rate_cartpole-swingup"
    assert output_stem("cartpole-swingup", "aotinductor") == "deploy_rate_cartpole-swingup_aotinductor"


def test_compile_bound_counts_matmul_flops_and_time_and_bounds_the_speedup():
    import torch

    from benchmarks.compile_bound import bounds, flops, matmul_ms

    a, b = torch.randn(64, 32), torch.randn(32, 16)
    assert flops(lambda: torch.mm(a, b)) == 2 * 64 * 32 * 16  # hand count: one multiply-add per term
    assert flops(lambda: a.exp()) == 0
    x = torch.randn(256, 256)
    assert matmul_ms(lambda: x.exp(), 3) == 0.0  # element-wise work is not counted
    assert matmul_ms(lambda: (torch.mm(x, x), torch.addmm(x, x, x), x.exp()), 3) > 0.0
    got = bounds({"plan": 20.0, "update": 40.0}, {"plan": 10.0, "update": 10.0})
    assert got == {"bound_plan": 2.0, "bound_update": 4.0, "bound_steps_per_s": 3.0}
