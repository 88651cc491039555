"""Where a planned action's time goes under onnxruntime, by operator kind, dense vs pruned.

    python benchmarks/ort_op_profile.py                       # cpu preset, 0 and 50 % of plan FLOPs removed
    python benchmarks/ort_op_profile.py ratios=0,0.5,0.75 calls=60

Why: under onnxruntime the planned-action latency falls less than its FLOPs when channels are pruned
(`benchmarks/deploy_latency.py`, the issue's bar is 0.85x). FLOPs (``pruning.study.cost_model.plan_flops``)
count the matrix products, whose cost is ``in x out`` per layer and falls about quadratically with the
widths; every other operator of the graph (LayerNorm, the Mish steps, the two-hot softmax over bins that are
never pruned, the MPPI weighting) costs per element and falls at most linearly with a width. This script
measures the split with onnxruntime's own profiler (``SessionOptions.enable_profiling``: the kernel time of
every node of every run) on the models of ``deploy_latency.py`` (random weights, pruned with random scores
to a FLOPs budget, latent included).

Per ratio: kernel milliseconds per planned action for each operator type and for four kinds (``matmul``:
Gemm / MatMul / FusedMatMul; ``elementwise``: arithmetic, activations, LayerNorm, Softmax, reductions;
``data``: Gather, Concat, Reshape, ... ; the rest ``other``), the time outside kernels (``model_run`` minus
the kernel sum: the executor's per-node cost) and the fall of each kind from the dense model. The profiler
adds its own per-node cost, so absolute times are above ``deploy_latency.py``'s; the split is the result.
Writes benchmarks/results/ort_op_profile.json.
"""

from __future__ import annotations

import collections
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.argv import parse_args  # noqa: E402
from benchmarks.result_file import write_result  # noqa: E402

MATMUL = {"Gemm", "MatMul", "FusedMatMul", "FusedGemm", "MatMulInteger"}
DATA = {"Gather", "GatherElements", "Concat", "Reshape", "Unsqueeze", "Squeeze", "Slice", "Transpose", "Expand",
        "Shape", "Cast", "Identity", "Split", "Tile", "Flatten", "ScatterElements", "ScatterND", "GatherND",
        "ConstantOfShape", "Range", "Where"}
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Exp", "Log", "Clip", "Max", "Min", "Neg", "Abs", "Sqrt", "Pow", "Tanh",
               "Sigmoid", "Softplus", "Mish", "Relu", "LayerNormalization", "SimplifiedLayerNormalization",
               "Softmax", "LogSoftmax", "ReduceSum", "ReduceMax", "ReduceMean", "ReduceMin", "ArgMax", "TopK",
               "Sign", "Reciprocal", "Erf", "Equal", "Less", "Greater", "Not", "And", "Or", "CumSum", "Floor",
               "Ceil", "Round", "Mod", "LessOrEqual", "GreaterOrEqual", "BiasGelu", "Gelu", "QuickGelu"}
KINDS = ("matmul", "elementwise", "data", "other")


def kind(op: str) -> str:
    return "matmul" if op in MATMUL else "elementwise" if op in ELEMENTWISE else "data" if op in DATA else "other"


def profile(directory: Path, calls: int, warmup: int = 5) -> dict:
    """Kernel time per operator type (ms per planned action) of ``directory``'s planner under onnxruntime."""
    import onnxruntime as ort

    from pruning.deploy import Controller, session_options

    controller = Controller.load(directory, mode="plan", num_threads=1)
    options = session_options(1)  # the deployed settings, plus the profiler
    options.enable_profiling = True
    options.profile_file_prefix = str(directory / "ort_profile")
    controller.planner_session = ort.InferenceSession(str(directory / controller.spec["files"]["planner"]),
                                                      options, providers=["CPUExecutionProvider"])
    obs = np.random.default_rng(0).standard_normal(controller.obs_dim).astype(np.float32)
    for _ in range(warmup):
        controller.act(obs)
    t0 = time.perf_counter()
    for _ in range(calls):
        controller.act(obs)
    wall_ms = (time.perf_counter() - t0) / calls * 1e3
    events = json.loads(Path(controller.planner_session.end_profiling()).read_text())
    runs = warmup + calls
    by_op: collections.Counter = collections.Counter()
    nodes = 0
    run_us = 0.0
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
            nodes += 1
        elif e.get("cat") == "Session" and e["name"] == "model_run":
            run_us += e["dur"]
    ops = {op: us / runs / 1e3 for op, us in by_op.most_common()}
    kinds = {k: sum(ms for op, ms in ops.items() if kind(op) == k) for k in KINDS}
    kernel = sum(ops.values())
    return {"wall_ms_profiled": wall_ms, "model_run_ms": run_us / runs / 1e3, "kernel_ms": kernel,
            "outside_kernels_ms": run_us / runs / 1e3 - kernel, "node_runs_per_call": nodes / runs,
            "kinds_ms": kinds, "ops_ms": ops}


DEFAULTS = {"size": "cpu", "ratios": "0,0.5", "calls": 40, "out": str(ROOT / "benchmarks" / "results" /
                                                                       "ort_op_profile.json")}


def main(argv: list[str]) -> dict:
    import torch

    from benchmarks.deploy_latency import ENV_SPEC, build_agent
    from pruning.study.cost_model import plan_flops
    from pruning.study.export import write_controller

    args = parse_args(argv, DEFAULTS)
    torch.set_num_threads(1)
    ratios = sorted({0.0, *(float(x) for x in str(args["ratios"]).split(","))})
    load_before, rows = list(os.getloadavg()), []
    with tempfile.TemporaryDirectory() as tmp:
        for r in ratios:
            agent, cfg, channel_ratio = build_agent(args["size"], r, True, "flops")
            d = Path(tmp) / f"r{r}"
            write_controller(agent, cfg, ENV_SPEC, d)
            row = {"ratio": r, "channel_ratio": round(channel_ratio, 5), "widths": agent.model.widths(),
                   "flops_plan": plan_flops(agent.model, cfg.planner), **profile(d, int(args["calls"]))}
            rows.append(row)
            print(f"ratio {r}: {row['flops_plan'] / 1e6:.0f} MFLOP, kernels {row['kernel_ms']:.1f} ms "
                  + ", ".join(f"{k} {v:.1f}" for k, v in row["kinds_ms"].items())
                  + f", outside kernels {row['outside_kernels_ms']:.1f} ms", flush=True)
    dense = rows[0]
    for row in rows:
        row["flops_fall"] = dense["flops_plan"] / row["flops_plan"]
        row["kind_fall"] = {k: (dense["kinds_ms"][k] / row["kinds_ms"][k] if row["kinds_ms"][k] else None)
                            for k in KINDS}
        row["model_run_fall"] = dense["model_run_ms"] / row["model_run_ms"]
        row["share_ms"] = {k: row["kinds_ms"][k] / row["model_run_ms"] for k in KINDS}
        row["share_ms"]["outside_kernels"] = row["outside_kernels_ms"] / row["model_run_ms"]
    out = {"command": " ".join(["python benchmarks/ort_op_profile.py", *argv]), "model_size": args["size"],
           "threads": 1, "calls": int(args["calls"]), "onnxruntime": __import__("onnxruntime").__version__,
           "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
           "load_average_before": load_before, "load_average_after": list(os.getloadavg()), "rows": rows}
    for row in rows[1:]:
        print(f"ratio {row['ratio']}: FLOPs fall {row['flops_fall']:.2f}x; model_run fall {row['model_run_fall']:.2f}x"
              f" (ratio {row['model_run_fall'] / row['flops_fall']:.2f}); by kind: "
              + ", ".join(f"{k} {v:.2f}x" for k, v in row["kind_fall"].items() if v))
    write_result(Path(args["out"]), out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
