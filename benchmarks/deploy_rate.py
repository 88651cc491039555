"""Retained return vs the control rate of the *deployed* controller: every model of a sweep exported and timed.

    python benchmarks/deploy_rate.py runs=runs/experiment/default/prune
    python benchmarks/deploy_rate.py runs=runs/experiment/default/prune runtime=aotinductor repeats=20

The report's control-rate plot (:mod:`pruning.study.control_rate`) uses the planned-action latency that each
prune job measured in PyTorch (eager, inside the training stack). Here every prune job's final model
(``RUN_DIR/checkpoint.pt``, dense reference included) is exported (:func:`pruning.study.export.export_controller`,
``format=onnx``, or ``pt2`` for ``runtime=aotinductor``) into a temporary folder and its planned action is timed
in the runtime a deployment would use (:class:`pruning.deploy.Controller`, 1 thread, batch 1, noise drawn with
numpy inside the call), interleaved over models: ``rounds`` rounds of ``repeats`` single calls each (see
:func:`benchmarks.deploy_latency.measure`). Returns are the prune jobs' own (evaluated in PyTorch; that the
exported controller returns the same is what ``scripts/export.py check=true`` tests): retained % of the same
agent's dense return after the same fine-tune, as in the report.

Writes ``benchmarks/results/deploy_rate_<task>.{json,csv,png,svg}`` (``deploy_rate_<task>_aotinductor.*`` for
``runtime=aotinductor``; ``out=DIR`` to change the folder): per model
the ORT (or AOTI) median and p99 latency, thread-CPU median, control rate, the prune job's PyTorch latency, the
FLOPs, the retained return; the plotted points; load averages before, after and per round (``final: false``
when other work took more than half a core, or the hypervisor more than 10 % of the CPU time while timing:
``cpu_steal_pct``, :mod:`benchmarks.cpu_steal`).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.argv import fail, parse_args  # noqa: E402
from benchmarks.cpu_steal import machine_busy  # noqa: E402
from benchmarks.result_file import write_result  # noqa: E402

RUNTIMES = {"onnxruntime": "onnx", "aotinductor": "pt2"}
DEFAULTS = {"runs": str(ROOT / "runs" / "experiment" / "default" / "prune"), "runtime": "onnxruntime",
            "repeats": 20, "rounds": 5, "out": str(ROOT / "benchmarks" / "results")}


def parse(argv: list[str]) -> dict:
    args = parse_args(argv, DEFAULTS)
    if args["runtime"] not in RUNTIMES:
        fail(f"invalid argument runtime={args['runtime']!r}; allowed: {'|'.join(RUNTIMES)}")
    if args["repeats"] < 1 or args["rounds"] < 1:
        fail(f"invalid argument repeats={args['repeats']} rounds={args['rounds']}; allowed: integers >= 1")
    if not Path(args["runs"]).is_dir():
        fail(f"invalid argument runs={args['runs']!r}; allowed: a folder of prune jobs (RUN/prune of the main job)")
    return args


def output_stem(task: str, runtime: str) -> str:
    """``deploy_rate_<task>`` for onnxruntime, ``deploy_rate_<task>_<runtime>`` otherwise: one file set per
    runtime, so that an AOTInductor run does not overwrite the onnxruntime figures."""
    from pruning.study.plots import slug

    return f"deploy_rate_{slug(task)}" + ("" if runtime == "onnxruntime" else f"_{runtime}")


def deployed_results(results, runtime: str, repeats: int, rounds: int, tmp: Path):
    """``results`` (the report's rows) with ``latency_plan_ms`` etc. replaced by the deployed controller's, and
    the per-round load averages, the CPU steal over the timed rounds and the export times."""
    import torch

    from benchmarks.deploy_latency import measure
    from pruning.deploy import Controller
    from pruning.study.export import export_controller

    torch.set_num_threads(1)
    fns, built = {}, []
    for i, row in enumerate(results.itertuples()):
        t0 = time.perf_counter()
        out = export_controller(Path(row.run_dir) / "checkpoint.pt", tmp / f"m{i}", fmt=RUNTIMES[runtime])
        built.append(time.perf_counter() - t0)
        ctrl = Controller.load(out, mode="plan", seed=0, num_threads=1)
        obs = np.random.default_rng(0).standard_normal(ctrl.obs_dim).astype(np.float32)  # one obs for all
        fns[i] = (lambda c=ctrl, o=obs: c.act(o))
        print(f"exported {i + 1}/{len(results)}: {row.metric} ratio={row.ratio} seed={row.seed} "
              f"({built[-1]:.1f} s)", flush=True)
    samples, loads, steal = measure(fns, repeats, rounds)
    df = results.copy()
    df["latency_plan_ms_torch"] = df["latency_plan_ms"]
    wall = [np.asarray(samples[i][0]) for i in range(len(df))]
    df["latency_plan_ms"] = [float(np.median(w)) for w in wall]
    df["p99_plan_ms"] = [float(np.percentile(w, 99)) for w in wall]
    df["latency_plan_cpu_ms"] = [float(np.median(samples[i][1])) for i in range(len(df))]
    df["latency_threads"], df["latency_clock"] = 1, "wall"  # the runtime is named in the plot title
    df["rate_plan_hz"] = 1e3 / df["latency_plan_ms"]
    return df, loads, steal, built


def main(argv: list[str]) -> None:
    args = parse(argv)
    from pruning.study.collect import collect_results
    from pruning.study.control_rate import control_rate_figure, control_rate_points
    from pruning.study.plots import latency_setting, save
    from pruning.study.stats import retained_returns

    results, failures = collect_results([args["runs"]])
    results = results[[(Path(d) / "checkpoint.pt").is_file() for d in results["run_dir"]]].reset_index(drop=True)
    if results.empty:
        fail(f"invalid argument runs={args['runs']!r}; allowed: a folder holding prune jobs with checkpoint.pt")
    load_before, started = list(os.getloadavg()), time.time()
    with tempfile.TemporaryDirectory() as tmp:
        df, loads, steal, built = deployed_results(results, args["runtime"], int(args["repeats"]), int(args["rounds"]),
                                            Path(tmp))
    load_after = list(os.getloadavg())
    loaded = machine_busy(loads, steal)
    retained = retained_returns(df).set_index("run_dir")["retained"]
    df["retained"] = [float(retained.get(d, 100.0 if r == 0 else np.nan)) for d, r in zip(df["run_dir"], df["ratio"])]
    out = Path(args["out"])
    out.mkdir(parents=True, exist_ok=True)
    points = control_rate_points(df)
    keep = ["task", "metric", "ratio", "seed", "train_seed", "flops_plan", "latency_plan_ms_torch", "latency_plan_ms",
            "p99_plan_ms", "latency_plan_cpu_ms", "rate_plan_hz", "retained", "return_mean", "dense_return", "run_dir"]
    for task, p in points.groupby("task", sort=True):
        stem = output_stem(task, args["runtime"])
        p.to_csv(out / f"{stem}.csv", index=False)
        t = df[df["task"] == task]
        setting = f"{args['runtime']}, {latency_setting(t)}"
        save(control_rate_figure(p, task, setting), out, stem)
        write_result(out / f"{stem}.json", {
            "command": " ".join(["python benchmarks/deploy_rate.py", *argv]), "runtime": args["runtime"],
            "threads": 1, "repeats": int(args["repeats"]), "rounds": int(args["rounds"]),
            "load_average_before": load_before, "load_average_after": load_after,
            "load_average_rounds": [round(x, 2) for x in loads],
            "cpu_steal_pct": None if steal is None else round(steal, 1), "final": not loaded,
            "export_s_median": round(float(np.median(built)), 1), "failed_jobs": len(failures),
            "wall_clock_s": round(time.time() - started, 1),
            "models": [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
                       for r in t[keep].to_dict("records")],
            "points": p.to_dict("records")})
        best = p[p["retained"] >= 90].sort_values("hz").tail(1)
        print(f"{task}: dense {float(p[p['metric'] == 'dense']['hz'].iloc[0]):.0f} Hz; fastest model keeping >= 90 %: "
              + (f"{best['metric'].iloc[0]} ratio {best['ratio'].iloc[0]} at {best['hz'].iloc[0]:.0f} Hz"
                 if len(best) else "none"), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
