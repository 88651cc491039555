"""Which Mish an onnxruntime deployment should run: the agent's formula or ONNX's ``Mish`` operator.

    python benchmarks/ort_mish.py                    # (256 + 16) x 192: one hidden Mish call of a CPU-preset plan
    python benchmarks/ort_mish.py rows=512 width=512 repeats=30

Why: in ``planner.onnx`` the agent's Mish (:class:`tdmpc.layers.Mish`: ``x * n / (n + 2)``, ``n = e^x (e^x + 2)``)
becomes seven element-wise nodes (Clip, Exp, Add, Mul, Add, Div, Mul), which together are the largest share of
the planned action's element-wise time (``benchmarks/ort_op_profile.py``). ``torch.nn.functional.mish``
exports as one ONNX ``Mish`` node (opset 18; onnxscript's torchlib). Fewer nodes is not the same as less time:
ONNX defines ``Mish`` as a function, ``x * tanh(softplus(x))``, which a runtime without its own kernel expands.
This script exports both modules with the exporter the deployment uses (:func:`pruning.study.export.export_graph`)
and times them in the deployment's onnxruntime settings (:func:`pruning.deploy.session_options`, 1 thread),
interleaved (:func:`benchmarks.deploy_latency.measure`): ``rounds`` rounds of ``repeats`` calls each, median and
IQR per variant, the largest absolute
difference from float64 ``x * tanh(softplus(x))``, and the node types of each graph.

Writes benchmarks/results/ort_mish.json (``out=...``), with the load averages and the CPU steal
(:mod:`benchmarks.cpu_steal`; ``final: false`` on a busy machine).
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.argv import fail, parse_args  # noqa: E402
from benchmarks.cpu_steal import machine_busy  # noqa: E402
from benchmarks.deploy_latency import measure  # noqa: E402
from benchmarks.result_file import write_result  # noqa: E402

DEFAULTS = {"rows": 272, "width": 192, "repeats": 50, "rounds": 20,
            "out": str(ROOT / "benchmarks" / "results" / "ort_mish.json")}


def export_variants(rows: int, width: int, folder: Path) -> dict[str, dict]:
    """``{"agent_formula": ..., "onnx_mish": ..., "log_tanh": ..., "softplus_tanh": ...}``: each the exported
    ``.onnx`` path and its node types (the last two: the same function written with fewer ONNX nodes)."""
    import onnx
    import torch
    import torch.nn as nn

    from pruning.study.export import export_graph
    from tdmpc.layers import Mish

    class LogTanh(nn.Module):  # x * tanh(log(1 + e^x)): Exp, Add, Log, Tanh, Mul (no Clip: e^x = inf gives x)
        def forward(self, x):
            return x * torch.tanh(torch.log(1 + torch.exp(x)))

    class SoftplusTanh(nn.Module):  # x * tanh(softplus(x)): Softplus, Tanh, Mul
        def forward(self, x):
            return x * torch.tanh(nn.functional.softplus(x))

    variants = {"agent_formula": Mish(), "onnx_mish": nn.Mish(), "log_tanh": LogTanh(), "softplus_tanh": SoftplusTanh()}
    out = {}
    x = torch.zeros(rows, width)
    for name, module in variants.items():
        path = folder / f"{name}.onnx"
        info = export_graph(module.eval(), (x,), path, ["x"], ["y"], exporter="dynamo")
        nodes = [n.op_type for n in onnx.load(str(path)).graph.node]
        out[name] = {"path": path, "nodes": nodes, "opset": info["opset"]}
    return out


def sessions(variants: dict[str, dict]) -> dict:
    """One onnxruntime session per variant, in the deployment's settings (1 thread)."""
    import onnxruntime as ort

    from pruning.deploy import session_options

    return {k: ort.InferenceSession(str(v["path"]), session_options(1), providers=["CPUExecutionProvider"])
            for k, v in variants.items()}


def main(argv: list[str]) -> dict:
    args = parse_args(argv, DEFAULTS)
    if min(args["rows"], args["width"], args["repeats"], args["rounds"]) < 1:
        fail(f"invalid arguments rows/width/repeats/rounds={args['rows']}/{args['width']}/{args['repeats']}/"
             f"{args['rounds']}; allowed: integers >= 1")
    import onnxruntime as ort
    import torch

    torch.set_num_threads(1)
    x = (np.random.default_rng(0).standard_normal((args["rows"], args["width"])) * 3).astype(np.float32)
    ref = x.astype(np.float64) * np.tanh(np.log1p(np.exp(x.astype(np.float64))))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        variants = export_variants(args["rows"], args["width"], Path(tmp))
        runs = sessions(variants)
        errors = {k: float(np.abs(s.run(None, {"x": x})[0] - ref).max()) for k, s in runs.items()}
        fns = {k: (lambda s=s: s.run(None, {"x": x})) for k, s in runs.items()}
        samples, round_loads, steal = measure(fns, args["repeats"], args["rounds"])
    load_after = os.getloadavg()
    rows = []
    for k, v in variants.items():
        q1, med, q3 = np.percentile(np.asarray(samples[k][0]) * 1e3, [25, 50, 75])  # ms -> us
        rows.append({"variant": k, "median_us": float(med), "iqr_us": float(q3 - q1), "max_abs_err": errors[k],
                     "nodes": v["nodes"], "opset": v["opset"]})
        print(f"{k:14s} {med:8.1f} us (IQR {q3 - q1:.1f})  max |err| {errors[k]:.2e}  nodes {v['nodes']}")
    by = {r["variant"]: r["median_us"] for r in rows}
    result = {
        "command": "python benchmarks/ort_mish.py " + " ".join(argv), "rows": args["rows"], "width": args["width"],
        "repeats": args["repeats"], "rounds": args["rounds"], "threads": 1, "results": rows,
        "onnx_mish_over_agent_formula": by["onnx_mish"] / by["agent_formula"],
        "over_agent_formula": {k: v / by["agent_formula"] for k, v in by.items()},
        "load_average_before": list(load_before), "load_average_after": list(load_after),
        "load_average_rounds": [round(v, 2) for v in round_loads],
        "cpu_steal_pct": None if steal is None else round(steal, 1), "final": not machine_busy(round_loads, steal),
        "onnxruntime": ort.__version__, "torch": torch.__version__, "machine": platform.machine(),
    }
    write_result(args["out"], result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
