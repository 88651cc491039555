"""How much faster than eager a compiled agent could be at best: the matrix-multiply floor.

    python benchmarks/compile_bound.py                 # CPU preset, 1 thread
    python benchmarks/compile_bound.py threads=2 repeats=20

``torch.compile`` removes dispatch and fuses element-wise work; it does not make the matrix multiplies
cheaper (inductor calls the same ATen ``mm`` / ``addmm`` / ``bmm`` / ``baddbmm`` kernels on CPU). So a compiled
planned action or update can at best take as long as its matrix multiplies, and ``eager_ms / matmul_ms`` bounds
the speed-up compiling can give at these widths on this machine. This benchmark measures, on the CPU preset
(``benchmarks/train_speed.py``'s agent and replay data) and in one process:

- the eager and the compiled planned action and update (medians of ``repeats`` calls, interleaved);
- the matrix multiplies inside the compiled ones: ``torch.profiler`` over ``repeats`` calls, the self time of
  the ATen matmul ops per call (the profiler's own cost per op is small next to a matmul's);
- their FLOPs (``torch.utils.flop_counter.FlopCounterMode`` over one eager call), hence the GFLOP/s the
  matrix multiplies reach: near the core's peak, the floor cannot be lowered by better kernels either.

``bound_plan`` / ``bound_update`` = eager ms / matmul ms; ``bound_steps_per_s`` = (eager plan + update) /
(matmul plan + matmul update), next to the speed issue's bars (2x for the planned action, 2.5x for agent
steps/s). Writes benchmarks/results/compile_bound.json (``out=<name>`` for another file name in that folder).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.argv import parse_args  # noqa: E402
from benchmarks.cpu_steal import cpu_ticks, steal_pct  # noqa: E402
from benchmarks.result_file import write_result  # noqa: E402
from benchmarks.train_speed import build, compiled_twin  # noqa: E402

DEFAULTS = {"threads": 1, "repeats": 12, "rounds": 3, "out": "compile_bound.json"}
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")


def matmul_ms(fn, calls: int) -> float:
    """Self CPU milliseconds per call of the ATen matrix-multiply ops that ``fn`` runs."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    return sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS) / calls / 1e3


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def bounds(eager_ms: dict[str, float], floor_ms: dict[str, float]) -> dict[str, float]:
    """Best speed-ups a compiled path made of its matrix multiplies alone could reach."""
    return {"bound_plan": eager_ms["plan"] / floor_ms["plan"], "bound_update": eager_ms["update"] / floor_ms["update"],
            "bound_steps_per_s": (eager_ms["plan"] + eager_ms["update"]) / (floor_ms["plan"] + floor_ms["update"])}


def main(argv: list[str]) -> dict:
    args = parse_args(argv, DEFAULTS)
    torch.set_num_threads(args["threads"])
    agent, buf, cfg = build("cpu", torch.device("cpu"))
    twin = compiled_twin(agent, "cpu", torch.device("cpu"))
    rng, obs = np.random.default_rng(0), torch.randn(agent.obs_dim)
    fns = {("plan", "eager"): lambda: agent.act(obs), ("plan", "compiled"): lambda: twin.act(obs),
           ("update", "eager"): lambda: agent.update(buf.sample(cfg.optim.batch_size, rng)),
           ("update", "compiled"): lambda: twin.update(buf.sample(cfg.optim.batch_size, rng))}
    t0 = time.perf_counter()
    for fn in fns.values():
        fn(), fn()  # compiles, then one call of every graph as used below
    compile_s = time.perf_counter() - t0
    load_before, ticks = os.getloadavg(), cpu_ticks()
    times: dict[tuple[str, str], list[float]] = {k: [] for k in fns}
    for r in range(args["rounds"]):
        for key, fn in (fns.items() if r % 2 == 0 else reversed(list(fns.items()))):
            for _ in range(args["repeats"]):
                t = time.perf_counter()
                fn()
                times[key].append(1e3 * (time.perf_counter() - t))
    ms = {k: float(np.median(v)) for k, v in times.items()}
    floor = {"plan": matmul_ms(fns[("plan", "compiled")], args["repeats"]),
             "update": matmul_ms(fns[("update", "compiled")], args["repeats"])}
    model_flops = {"plan": flops(fns[("plan", "eager")]), "update": flops(fns[("update", "eager")])}
    eager = {c: ms[(c, "eager")] for c in ("plan", "update")}
    compiled = {c: ms[(c, "compiled")] for c in ("plan", "update")}
    steal = steal_pct(ticks, cpu_ticks())
    out = {
        "command": "python benchmarks/compile_bound.py " + " ".join(argv), "model_size": "cpu",
        "threads": args["threads"], "torch": torch.__version__, "compile_s": round(compile_s, 1),
        "eager_ms": eager, "compiled_ms": compiled, "matmul_ms_in_compiled": floor, "flops": model_flops,
        "matmul_gflops_per_s": {c: model_flops[c] / floor[c] / 1e6 for c in floor},
        "speedup": {"plan": eager["plan"] / compiled["plan"], "update": eager["update"] / compiled["update"],
                    "steps_per_s": sum(eager.values()) / sum(compiled.values())},
        **bounds(eager, floor), "bars": {"plan": 2.0, "steps_per_s": 2.5},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_steal_pct": None if steal is None else round(steal, 1),
    }
    print(f"eager plan {eager['plan']:.1f} / update {eager['update']:.1f} ms; compiled {compiled['plan']:.1f} / "
          f"{compiled['update']:.1f} ms; their matrix multiplies {floor['plan']:.1f} / {floor['update']:.1f} ms "
          f"({out['matmul_gflops_per_s']['plan']:.0f} / {out['matmul_gflops_per_s']['update']:.0f} GFLOP/s); "
          f"bounds: plan x{out['bound_plan']:.2f}, update x{out['bound_update']:.2f}, agent steps/s "
          f"x{out['bound_steps_per_s']:.2f} (measured x{out['speedup']['plan']:.2f}, x{out['speedup']['update']:.2f}, "
          f"x{out['speedup']['steps_per_s']:.2f})")
    write_result(ROOT / "benchmarks" / "results" / Path(args["out"]).name, out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
