"""Planned-action and policy-action latency vs FLOPs of structurally pruned TD-MPC world models.

    python benchmarks/prune_latency.py                       # cpu preset and model_size=5, batch 1, 1 thread
    python benchmarks/prune_latency.py sizes=cpu rounds=3 min_run_time=0.5 latent=0,1

For each model size (cartpole-swingup shapes: obs 5, action 1; planner from the size's preset via
``tdmpc.config.resolve_presets``) a dense world model is built (seed 0) and copies are pruned to each
ratio: the fraction of the **hidden-layer channels** removed, ``scope="global"`` over all hidden groups
with random scores (seed 0). The latent is **not** pruned by default (``latent=0``): the issue's bar is
about hidden layers, and the latent is a coupling of all five components whose removal also shrinks
the input / output layers; ``latent=1`` adds rows where the SimNorm latent is in the global ranking too.

Latency (:func:`pruning.study.cost_model.tdmpc_latency`): ``Timer.blocked_autorange`` per measurement, batch-1
observation, ``threads`` torch threads. All ratios of a size are measured in turn, ``rounds`` times
(interleaved, so slow phases of a shared machine hit all ratios alike); reported are the median over
rounds of the per-measurement medians, the median IQR, and the fall vs the dense model computed within
each round (median over rounds). Two clocks: ``wall`` (latency proper) and ``thread`` (CPU time of the
single thread, robust to other processes taking the core; needs ``threads=1``).

The bar from the issue: at ratio 0.5, ``latency fall >= 0.8 x FLOPs fall`` for the planned action.
``floor_ms`` is the planned-action latency of the same architecture with every hidden width set to 8
(almost no FLOPs): the width-independent part of the latency (per-op dispatch, Python, softmax over
the reward/value bins, SimNorm, the planner's own arithmetic). ``profile`` gives the share of ATen time
spent in matrix multiplies (``torch.profiler``) at ratios 0 and 0.5.

Writes benchmarks/results/prune_latency.json.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.argv import parse_args  # noqa: E402
from pruning import model_groups, prune  # noqa: E402
from pruning.measure import count_params  # noqa: E402
from pruning.study.cost_model import plan_flops, policy_action_flops, tdmpc_latency  # noqa: E402
from tdmpc.config import TrainConfig, resolve_presets  # noqa: E402
from tdmpc.planner import MPPIPlanner  # noqa: E402
from tdmpc.world_model import WorldModel  # noqa: E402

OBS_DIM, ACTION_DIM, DISCOUNT = 5, 1, 0.99
MATMUL_OPS = ("aten::addmm", "aten::baddbmm", "aten::mm", "aten::bmm")


def build(size: str, ratio: float, prune_latent: bool, width: int | None = None):
    cfg = resolve_presets(TrainConfig(model_size=size))
    if width is not None:
        cfg.model.mlp_dim = cfg.model.enc_dim = width
    torch.manual_seed(0)
    model = WorldModel(OBS_DIM, ACTION_DIM, cfg.model)
    if ratio > 0:
        groups = model_groups(model, couplings=prune_latent)
        gen = torch.Generator().manual_seed(0)
        prune(groups, {g.name: torch.rand(g.size, generator=gen) for g in groups}, ratio, scope="global")
    model.eval()
    return model, MPPIPlanner(model, cfg.planner, ACTION_DIM, DISCOUNT), cfg


@torch.no_grad()
def matmul_share(model, planner, repeats: int = 3) -> dict:
    """Share of the profiled ATen self-CPU time spent in matrix multiplies, per planned action."""
    from torch.profiler import ProfilerActivity, profile

    obs = torch.randn(1, OBS_DIM)
    planner.plan(model.encode(obs))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            planner.plan(model.encode(obs))
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    mm = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    total = sum(e.self_cpu_time_total for e in events)
    return {"matmul_ms": mm / 1e3 / repeats, "aten_ms": total / 1e3 / repeats, "matmul_share": mm / total,
            "aten_calls": sum(e.count for e in events) // repeats}


def bench_size(size: str, ratios: list[float], prune_latent: bool, args: dict) -> tuple[list[dict], dict]:
    threads, mrt, rounds = int(args["threads"]), float(args["min_run_time"]), int(args["rounds"])
    clocks = ["wall", "thread"] if threads == 1 else ["wall"]
    built = {r: build(size, r, prune_latent) for r in ratios}
    lat: dict = {(r, c, k): [] for r in ratios for c in clocks for k in ("policy", "plan")}
    iqr: dict = {key: [] for key in lat}
    for rnd in range(rounds):
        for clock in clocks:
            for r in ratios:
                model, planner, _ = built[r]
                out = tdmpc_latency(model, planner, num_threads=threads, min_run_time=mrt, clock=clock)
                for k in ("policy", "plan"):
                    lat[(r, clock, k)].append(out[k]["median_ms"])
                    iqr[(r, clock, k)].append(out[k]["iqr_ms"])
        print(f"  [{size} latent={int(prune_latent)}] round {rnd + 1}/{rounds}: plan ms "
              + ", ".join(f"{r}: {lat[(r, 'wall', 'plan')][-1]:.1f}" for r in ratios), flush=True)

    dense_model, _, cfg = built[0.0] if 0.0 in built else build(size, 0.0, prune_latent)
    f_plan0, f_pol0 = plan_flops(dense_model, cfg.planner), policy_action_flops(dense_model)
    entries = []
    for r in ratios:
        model, planner, cfg = built[r]
        e = {
            "model_size": size, "ratio": r, "prune_latent": prune_latent, "scope": "global", "scores": "random",
            "params": count_params(model)["total"], "widths": model.widths(),
            "flops_plan": plan_flops(model, cfg.planner), "flops_policy": policy_action_flops(model),
        }
        e["flops_fall_plan"] = f_plan0 / e["flops_plan"]
        e["flops_fall_policy"] = f_pol0 / e["flops_policy"]
        for clock in clocks:
            sfx = "" if clock == "wall" else "_cpu"
            for k in ("plan", "policy"):
                e[f"latency_{k}{sfx}_ms"] = statistics.median(lat[(r, clock, k)])
                e[f"latency_{k}{sfx}_iqr_ms"] = statistics.median(iqr[(r, clock, k)])
                if 0.0 in ratios:
                    falls = [a / b for a, b in zip(lat[(0.0, clock, k)], lat[(r, clock, k)])]
                    e[f"latency_fall_{k}{sfx}"] = statistics.median(falls)
                    e[f"fall_ratio_{k}{sfx}"] = e[f"latency_fall_{k}{sfx}"] / e[f"flops_fall_{k}"]
        entries.append(e)

    diag: dict = {"model_size": size, "prune_latent": prune_latent,
                  "planner": {k: getattr(cfg.planner, k) for k in ("iterations", "num_samples", "num_elites",
                                                                    "num_pi_trajs", "horizon")}}
    if not prune_latent:
        fm, fp, _ = build(size, 0.0, False, width=8)
        clock = "thread" if threads == 1 else "wall"
        diag["floor_ms"] = tdmpc_latency(fm, fp, num_threads=threads, min_run_time=mrt, clock=clock)["plan"]["median_ms"]
        diag["floor_clock"] = clock
        diag["floor_flops_plan"] = plan_flops(fm, fp.cfg)
        if args["profile"]:
            torch.set_num_threads(threads)
            diag["profile"] = {str(r): matmul_share(*built[r][:2]) for r in ratios if r in (0.0, 0.5)}
    return entries, diag


#: ``latent`` is a comma-separated list of 0|1 (prune the latent width too); ``profile``: matmul shares.
DEFAULTS = {"sizes": "cpu,5", "ratios": "0,0.25,0.5,0.75", "threads": 1, "min_run_time": 1.0, "rounds": 5,
            "latent": "0", "profile": True}


def main(argv: list[str]) -> None:
    args = parse_args(argv, DEFAULTS)
    ratios = [float(x) for x in args["ratios"].split(",")]
    if 0.0 not in ratios:
        ratios = [0.0, *ratios]
    started = time.time()
    out = {"command": " ".join(["python benchmarks/prune_latency.py", *argv]), "device": "cpu",
           "threads": int(args["threads"]), "torch": torch.__version__,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "machine": platform.processor() or platform.machine(),
           "bar": "at ratio 0.5 (hidden channels), planned-action latency fall >= 0.8 x FLOPs fall",
           "entries": [], "diagnostics": []}
    for size in args["sizes"].split(","):
        for latent in [bool(int(x)) for x in args["latent"].split(",")]:
            entries, diag = bench_size(size, ratios, latent, args)
            out["entries"] += entries
            out["diagnostics"].append(diag)
            for e in entries:
                cpu = f", cpu {e['latency_plan_cpu_ms']:7.1f} ms (fall {e['latency_fall_plan_cpu']:.2f})" \
                    if "latency_plan_cpu_ms" in e else ""
                print(f"model_size={size:>3} latent={int(latent)} ratio={e['ratio']:.2f}: params {e['params']:>8}, "
                      f"plan {e['flops_plan'] / 1e6:9.1f} MFLOP (fall {e['flops_fall_plan']:.2f}), "
                      f"{e['latency_plan_ms']:7.1f} ms (fall {e['latency_fall_plan']:.2f}){cpu}; "
                      f"policy {e['latency_policy_ms']:.3f} ms", flush=True)
    for e in out["entries"]:
        if e["ratio"] == 0.5 and not e["prune_latent"]:
            verdict = {"model_size": e["model_size"], "flops_fall": e["flops_fall_plan"],
                       "latency_fall": e["latency_fall_plan"], "ratio": e["fall_ratio_plan"],
                       "passed": e["fall_ratio_plan"] >= 0.8}
            if "fall_ratio_plan_cpu" in e:
                verdict.update(latency_fall_cpu=e["latency_fall_plan_cpu"], ratio_cpu=e["fall_ratio_plan_cpu"],
                               passed_cpu=e["fall_ratio_plan_cpu"] >= 0.8)
            out.setdefault("bar_results", []).append(verdict)
    out["wall_clock_s"] = round(time.time() - started, 1)
    path = ROOT / "benchmarks" / "results" / "prune_latency.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out.get("bar_results", []), indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
