"""Agent steps/s (acting + one update), planning latency per action and update time, eager vs compiled.

    python benchmarks/train_speed.py                              # cpu preset and model_size=5, on CPU
    python benchmarks/train_speed.py sizes=cpu threads=1 rounds=5
    python benchmarks/train_speed.py compiled=0 ensemble=1,2,3,4,5   # eager only, Q-ensemble scaling
    python benchmarks/train_speed.py busy=1                       # with one CPU-bound process beside it

Per preset (cartpole-swingup shapes: obs 5, action 1; a replay buffer of random episodes): an eager agent
and a compiled twin (``TDMPC.set_compile(True)``: ``torch.compile`` of the update and of the planner's
``plan_step``) with the same weights. The compile time is the wall-clock of the first compiled planned
action and the first compiled update, in a fresh inductor cache (``TORCHINDUCTOR_CACHE_DIR`` is set to a
new temporary folder unless ``warm_cache=1``), i.e. what the first run of a user pays. Then ``rounds``
interleaved rounds: each round times eager plan, compiled plan, eager update, compiled update with
``torch.utils.benchmark.Timer.blocked_autorange`` (``min_run_time`` s each); the figures are the median
over rounds of the per-round medians, with the IQR over rounds. ``steps_per_s_* = 1000 / (plan_ms +
update_ms)``. The load average before and after is recorded (figures from a loaded machine are not final).

``ensemble=1,..,5`` also sweeps the Q-ensemble size on the cpu preset, eager (planning evaluates two
members for the terminal value, so it must grow sub-linearly in the ensemble size).

Writes benchmarks/results/train_speed.json (``out=...`` to change).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.benchmark import Timer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.argv import parse_args  # noqa: E402
from benchmarks.cpu_steal import cpu_ticks, steal_pct  # noqa: E402
from tdmpc.agent import TDMPC  # noqa: E402
from tdmpc.buffer import ReplayBuffer  # noqa: E402
from tdmpc.config import TrainConfig, resolve_presets  # noqa: E402


def build(model_size: str, device: torch.device, num_q: int | None = None):
    cfg = TrainConfig(model_size=model_size, compile="false")
    if num_q is not None:
        cfg.model.num_q = num_q
    resolve_presets(cfg)  # num_q=1 is allowed here (validate() requires 2 for training)
    torch.manual_seed(0)
    agent = TDMPC(5, 1, 125, cfg, device)
    buf = ReplayBuffer(10_000, 5, 1, cfg.planner.horizon, device)
    for _ in range(4):
        buf.add_episode(torch.randn(126, 5), torch.rand(125, 1) * 2 - 1, torch.rand(125), torch.zeros(125))
    return agent, buf, cfg


def compiled_twin(agent, model_size: str, device: torch.device):
    """A second agent of :func:`build` with ``agent``'s weights, set to compile (``TDMPC.set_compile(True)``)."""
    twin, _, _ = build(model_size, device)
    twin.load_state_dict(agent.state_dict())
    twin.set_compile(True)
    return twin


def build_tracked(model_size: str, threads: int):
    """The CPU benchmarks' tracked agent: ``threads`` torch threads, :func:`build` on the CPU, an
    ``ImportanceTracker`` of every registered metric (no snapshots), the replay sampler's generator and one
    observation. Returns ``(agent, buf, cfg, tracker, rng, obs)``."""
    from pruning.config import TrackingConfig
    from pruning.tracker import ImportanceTracker

    torch.set_num_threads(threads)
    agent, buf, cfg = build(model_size, torch.device("cpu"))
    tracker = ImportanceTracker(agent.model, TrackingConfig(snapshot_interval=0), samples=cfg.optim.batch_size)
    return agent, buf, cfg, tracker, np.random.default_rng(0), torch.randn(agent.obs_dim)


def timer(fn, min_run_time: float, threads: int, sync: bool) -> float:
    """Median seconds of ``fn`` over ``blocked_autorange`` blocks."""
    def stmt():
        fn()
        if sync:
            torch.cuda.synchronize()

    return Timer(stmt="stmt()", globals={"stmt": stmt}, num_threads=threads).blocked_autorange(
        min_run_time=min_run_time).median


def summary(xs: list[float]) -> dict:
    q = np.percentile(xs, [25, 75])
    return {"median_ms": 1e3 * statistics.median(xs), "iqr_ms": 1e3 * float(q[1] - q[0]), "rounds": len(xs)}


def bench(size: str, device: torch.device, args: dict) -> dict:
    threads, mrt, sync = args["threads"], args["min_run_time"], device.type == "cuda"
    agent, buf, cfg = build(size, device)
    rng = np.random.default_rng(0)
    obs = torch.randn(5)
    fns = {"plan_eager": lambda: agent.act(obs), "update_eager": lambda: agent.update(buf.sample(cfg.optim.batch_size, rng))}
    row = {"model_size": size, "num_q": cfg.model.num_q,
           "params": sum(p.numel() for p in agent.model.parameters() if p.requires_grad),
           "planner": {"iterations": cfg.planner.iterations, "num_samples": cfg.planner.num_samples,
                       "horizon": cfg.planner.horizon, "num_pi_trajs": cfg.planner.num_pi_trajs}}
    if args["compiled"]:
        twin = compiled_twin(agent, size, device)
        t0 = time.perf_counter()
        twin.act(obs)
        row["compile_plan_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        twin.update(buf.sample(cfg.optim.batch_size, rng))
        row["compile_update_s"] = time.perf_counter() - t0
        row["compile_s"] = row["compile_plan_s"] + row["compile_update_s"]
        print(f"model_size={size}: compiled in {row['compile_s']:.0f} s (plan {row['compile_plan_s']:.0f} s, "
              f"update {row['compile_update_s']:.0f} s)", flush=True)
        fns = {"plan_eager": fns["plan_eager"], "plan_compiled": lambda: twin.act(obs),
               "update_eager": fns["update_eager"],
               "update_compiled": lambda: twin.update(buf.sample(cfg.optim.batch_size, rng))}
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(args["rounds"]):
        for k, fn in fns.items():
            times[k].append(timer(fn, mrt, threads, sync))
        print(f"  round {r + 1}/{args['rounds']}: " + ", ".join(f"{k} {1e3 * v[-1]:.1f} ms" for k, v in times.items()),
              flush=True)
    for k, xs in times.items():
        row[k] = summary(xs)
    for kind in ("eager", "compiled"):
        if f"plan_{kind}" in row:
            plan, update = row[f"plan_{kind}"]["median_ms"], row[f"update_{kind}"]["median_ms"]
            row[f"plan_ms_{kind}"], row[f"update_ms_{kind}"] = plan, update
            row[f"steps_per_s_{kind}"] = 1e3 / (plan + update)
    if args["compiled"]:
        row["speedup_steps_per_s"] = row["steps_per_s_compiled"] / row["steps_per_s_eager"]
        row["speedup_plan"] = row["plan_ms_eager"] / row["plan_ms_compiled"]
        row["speedup_update"] = row["update_ms_eager"] / row["update_ms_compiled"]
        print(f"model_size={size}: {row['steps_per_s_eager']:.2f} -> {row['steps_per_s_compiled']:.2f} agent steps/s "
              f"(x{row['speedup_steps_per_s']:.2f}); plan x{row['speedup_plan']:.2f}, update x{row['speedup_update']:.2f}",
              flush=True)
    return row


def ensemble_row(num_q: int, device: torch.device, args: dict) -> dict:
    """Eager plan and update time of the cpu preset with ``num_q`` Q-members."""
    agent, buf, cfg = build("cpu", device, num_q=num_q)
    rng = np.random.default_rng(0)
    obs = torch.randn(5)
    plan = timer(lambda: agent.act(obs), args["min_run_time"], args["threads"], False)
    update = timer(lambda: agent.update(buf.sample(cfg.optim.batch_size, rng)), args["min_run_time"], args["threads"],
                   False)
    print(f"num_q={num_q}: plan {1e3 * plan:7.1f} ms, update {1e3 * update:7.1f} ms", flush=True)
    return {"num_q": num_q, "plan_latency_ms": 1e3 * plan, "update_ms": 1e3 * update}


DEFAULTS = {"sizes": "cpu,5", "threads": 2, "min_run_time": 2.0, "rounds": 5, "device": "cpu", "compiled": True,
            "warm_cache": False, "ensemble": "", "busy": 0, "out": "train_speed.json"}


def main(argv: list[str]) -> None:
    args = parse_args(argv, DEFAULTS)
    if args["compiled"] and not args["warm_cache"]:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cold-")
    device = torch.device(args["device"])
    torch.set_num_threads(args["threads"])
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args["busy"])]
    out = {"command": " ".join(["python benchmarks/train_speed.py", *argv]), "device": str(device),
           "threads": args["threads"], "busy_processes": args["busy"], "rounds": args["rounds"],
           "min_run_time_s": args["min_run_time"], "fresh_inductor_cache": args["compiled"] and not args["warm_cache"],
           "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "load_average_before": list(os.getloadavg()), "presets": []}
    ticks_before = cpu_ticks()
    try:
        for size in [s for s in args["sizes"].split(",") if s]:
            out["presets"].append(bench(size, device, args))
        scaling = [ensemble_row(q, device, args) for q in [int(x) for x in args["ensemble"].split(",") if x]]
        if scaling:
            out["ensemble_scaling"] = scaling
    finally:
        for p in busy:
            p.kill()
    out["load_average_after"] = list(os.getloadavg())
    out["cpu_steal_pct"] = steal_pct(ticks_before, cpu_ticks())  # the host's share, not in the load average
    path = ROOT / "benchmarks" / "results" / args["out"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
