"""Would a ``format=pt2`` export (``torch.export`` + AOTInductor) plan faster than ``torch.compile`` or onnxruntime?

    python benchmarks/pt2_latency.py                       # cpu preset, dense and 50 % of planned-action FLOPs removed
    python benchmarks/pt2_latency.py ratios=0,0.75 repeats=30 rounds=5

The planned-action graph is the exported planner's (:class:`pruning.study.export_graphs.PlanGraph`, i.e.
:func:`tdmpc.planner.plan_step` after the encoder, every random draw an input). For each model (the agents
of ``benchmarks/deploy_latency.py``: random weights, pruned by random scores to ``ratio`` of the
planned-action FLOPs) it is run four ways on the same inputs, 1 thread:

- ``eager``: the module itself;
- ``compiled``: ``torch.compile(graph, fullgraph=True, dynamic=False)`` (what ``compile=true`` plans with);
- ``aoti``: ``torch.export.export`` then ``torch._inductor.aoti_compile_and_package`` with the export's
  settings (``pruning.study.export.PT2_INDUCTOR_CONFIGS``: weights frozen) and ``aoti_load_package`` (what
  a ``format=pt2`` export ships; it needs libtorch to run);
- ``aoti_unfrozen``: the same package built with inductor's default settings (what ``format=pt2`` shipped
  until round 2, session 11);
- ``onnxruntime``: ``planner.onnx`` of :func:`pruning.study.export.write_controller` in an
  ``InferenceSession`` (the graph alone, without :class:`pruning.deploy.Controller` 's numpy noise draws).

Timing: ``repeats`` calls per way and round, the ways in turn, ``rounds`` rounds (interleaved); median and
p99 wall-clock. The export and compile times and the largest difference of each way's action and mean from
the eager module's are recorded. Writes ``benchmarks/results/pt2_latency.json``.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.argv import parse_args  # noqa: E402
from benchmarks.deploy_latency import ENV_SPEC, build_agent  # noqa: E402
from pruning.deploy import Controller  # noqa: E402
from pruning.study.cost_model import plan_flops  # noqa: E402
from pruning.study.export import PT2_INDUCTOR_CONFIGS, plan_inputs, write_controller  # noqa: E402
from pruning.study.export_graphs import PlanGraph  # noqa: E402
from tdmpc.planner import PlanNoise  # noqa: E402

DEFAULTS = {"size": "cpu", "ratios": "0,0.5", "repeats": 30, "rounds": 5, "out": "pt2_latency.json"}


def ways(agent, cfg, tmp: Path) -> tuple[dict, dict, tuple]:
    """``{way: callable(*inputs)}``, ``{way: build seconds}`` and the inputs, for one agent."""
    model = copy.deepcopy(agent.model).eval()
    noise = PlanNoise.draw(cfg.planner, ENV_SPEC["action_dim"], len(model.qs), torch.Generator().manual_seed(0))
    obs = torch.from_numpy(np.random.default_rng(0).standard_normal(ENV_SPEC["obs_dim"]).astype(np.float32))
    inputs = plan_inputs(obs, None, noise)
    args = tuple(inputs.values())
    graph = PlanGraph(model, cfg.planner, agent.discount).eval()
    fns, build_s = {"eager": graph}, {}
    with torch.no_grad():
        t0 = time.perf_counter()
        compiled = torch.compile(graph, fullgraph=True, dynamic=False)
        compiled(*args)
        build_s["compiled"] = time.perf_counter() - t0
        for way, configs in (("aoti", PT2_INDUCTOR_CONFIGS), ("aoti_unfrozen", {})):
            t0 = time.perf_counter()
            program = torch.export.export(PlanGraph(copy.deepcopy(model), cfg.planner, agent.discount).eval(), args)
            package = torch._inductor.aoti_compile_and_package(program, package_path=str(tmp / f"{way}.pt2"),
                                                               inductor_configs=configs)
            fns[way] = torch._inductor.aoti_load_package(package)
            fns[way](*args)
            build_s[way] = time.perf_counter() - t0
    fns["compiled"] = compiled
    t0 = time.perf_counter()
    write_controller(agent, cfg, ENV_SPEC, tmp)
    session = Controller.load(tmp, mode="plan", num_threads=1).planner_session  # the deployed runtime's session
    feed = {k: v.numpy() for k, v in inputs.items()}
    build_s["onnxruntime"] = time.perf_counter() - t0
    fns["onnxruntime"] = lambda *_: session.run(None, feed)
    return fns, build_s, args


def main(argv: list[str]) -> dict:
    args = parse_args(argv, DEFAULTS)
    torch.set_num_threads(1)
    ratios = sorted({0.0, *(float(x) for x in args["ratios"].split(","))})
    load_before, rows = list(os.getloadavg()), []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        models = {}
        for r in ratios:
            agent, cfg, _ = build_agent(args["size"], r, True, "flops")
            folder = Path(tmp) / f"r{r}"
            folder.mkdir()
            fns, build_s, inputs = ways(agent, cfg, folder)
            ref = fns["eager"](*inputs)
            diff = {}
            for way, fn in fns.items():
                out = fn(*inputs)
                diff[way] = max(float(np.abs(np.asarray(o) - e.numpy()).max()) for o, e in zip(out, ref))
            models[r] = (agent, cfg, fns, build_s, inputs, diff)
            print(f"ratio {r}: built in {build_s} s; max |difference| from eager {diff}", flush=True)
        samples = {(r, w): [] for r in models for w in models[r][2]}
        loads = []
        for rnd in range(int(args["rounds"])):
            for r, (_, _, fns, _, inputs, _) in models.items():
                for way, fn in fns.items():
                    for _ in range(int(args["repeats"])):
                        t0 = time.perf_counter()
                        fn(*inputs)
                        samples[(r, way)].append((time.perf_counter() - t0) * 1e3)
            loads.append(os.getloadavg()[0])
            print(f"  round {rnd + 1}/{args['rounds']} done (load average {loads[-1]:.2f})", flush=True)
        for (r, way), ms in samples.items():
            agent, cfg, _, build_s, _, diff = models[r]
            rows.append({"ratio": r, "runtime": way, "flops_plan": plan_flops(agent.model, cfg.planner),
                         "latency_plan_ms": float(np.median(ms)), "p99_plan_ms": float(np.percentile(ms, 99)),
                         "samples": len(ms), "build_s": build_s.get(way), "max_abs_diff_vs_eager": diff[way]})
    result = {"command": "python benchmarks/pt2_latency.py " + " ".join(argv), "model_size": args["size"],
              "threads": 1, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "load_average_before": load_before, "load_average_rounds": [round(x, 2) for x in loads],
              "rows": rows}
    for row in rows:
        print(f"{row['runtime']:>12} ratio={row['ratio']:.2f}: {row['flops_plan'] / 1e6:7.1f} MFLOP "
              f"{row['latency_plan_ms']:7.2f} ms (p99 {row['p99_plan_ms']:7.2f})", flush=True)
    path = ROOT / "benchmarks" / "results" / Path(args["out"]).name
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
