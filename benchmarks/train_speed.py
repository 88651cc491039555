"""Agent steps/s (acting + one update) and planning latency per action, median of repeats.

    python benchmarks/train_speed.py                      # cpu preset and model_size=5, on CPU
    python benchmarks/train_speed.py sizes=cpu threads=1 min_run_time=5

Measured with ``torch.utils.benchmark.Timer.blocked_autorange`` (median and IQR over blocks) on
cartpole-swingup shapes (obs 5, action 1) with a replay buffer of random episodes. Also sweeps the
Q-ensemble size 1..5 on the cpu preset: planning evaluates two random members for the terminal value,
so its latency must grow sub-linearly in the ensemble size; the update uses every member.
Writes benchmarks/results/train_speed.json.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.benchmark import Timer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.argv import parse_args  # noqa: E402
from tdmpc.agent import TDMPC  # noqa: E402
from tdmpc.buffer import ReplayBuffer  # noqa: E402
from tdmpc.config import TrainConfig, resolve_presets  # noqa: E402


def build(model_size: str, device: torch.device, num_q: int | None = None):
    cfg = TrainConfig(model_size=model_size)
    if num_q is not None:
        cfg.model.num_q = num_q
    resolve_presets(cfg)  # num_q=1 is allowed here (validate() requires 2 for training)
    torch.manual_seed(0)
    agent = TDMPC(5, 1, 125, cfg, device)
    buf = ReplayBuffer(10_000, 5, 1, cfg.planner.horizon, device)
    for _ in range(4):
        buf.add_episode(torch.randn(126, 5), torch.rand(125, 1) * 2 - 1, torch.rand(125), torch.zeros(125))
    return agent, buf, cfg


def measure(fn, min_run_time: float, threads: int, sync: bool) -> dict:
    def stmt():
        fn()
        if sync:
            torch.cuda.synchronize()

    fn()  # warm-up
    m = Timer(stmt="stmt()", globals={"stmt": stmt}, num_threads=threads).blocked_autorange(min_run_time=min_run_time)
    return {"median_ms": m.median * 1e3, "iqr_ms": m.iqr * 1e3, "repeats": len(m.times)}


def bench(model_size: str, device: torch.device, threads: int, min_run_time: float, num_q: int | None = None):
    agent, buf, cfg = build(model_size, device, num_q)
    rng = np.random.default_rng(0)
    obs = torch.randn(5)
    sync = device.type == "cuda"
    plan = measure(lambda: agent.act(obs), min_run_time, threads, sync)
    update = measure(lambda: agent.update(buf.sample(cfg.optim.batch_size, rng)), min_run_time, threads, sync)
    step_ms = plan["median_ms"] + update["median_ms"]
    return {
        "model_size": model_size, "num_q": cfg.model.num_q,
        "params": sum(p.numel() for p in agent.model.parameters() if p.requires_grad),
        "planner": {"iterations": cfg.planner.iterations, "num_samples": cfg.planner.num_samples,
                    "horizon": cfg.planner.horizon, "num_pi_trajs": cfg.planner.num_pi_trajs},
        "plan_latency_ms": plan, "update_ms": update,
        "agent_steps_per_s": 1e3 / step_ms,
    }


DEFAULTS = {"sizes": "cpu,5", "threads": 2, "min_run_time": 3.0, "device": "cpu", "ensemble": "1,2,3,4,5"}


def main(argv: list[str]) -> None:
    args = parse_args(argv, DEFAULTS)
    device = torch.device(args["device"])
    threads, mrt = args["threads"], args["min_run_time"]
    torch.set_num_threads(threads)
    out = {"command": " ".join(["python benchmarks/train_speed.py", *argv]), "device": str(device),
           "threads": threads, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
           "presets": [], "ensemble_scaling": []}
    for size in args["sizes"].split(","):
        r = bench(size, device, threads, mrt)
        out["presets"].append(r)
        print(f"model_size={size:>4}: {r['agent_steps_per_s']:6.2f} agent steps/s, plan "
              f"{r['plan_latency_ms']['median_ms']:8.1f} ms, update {r['update_ms']['median_ms']:8.1f} ms", flush=True)
    for q in [int(x) for x in args["ensemble"].split(",") if x]:
        r = bench("cpu", device, threads, mrt, num_q=q)
        out["ensemble_scaling"].append({"num_q": q, "plan_latency_ms": r["plan_latency_ms"]["median_ms"],
                                        "update_ms": r["update_ms"]["median_ms"]})
        print(f"num_q={q}: plan {r['plan_latency_ms']['median_ms']:7.1f} ms, update {r['update_ms']['median_ms']:7.1f} ms",
              flush=True)
    if len(out["ensemble_scaling"]) >= 2:
        first, last = out["ensemble_scaling"][0], out["ensemble_scaling"][-1]
        k = last["num_q"] / first["num_q"]
        out["plan_latency_ratio"] = last["plan_latency_ms"] / first["plan_latency_ms"]
        out["update_ratio"] = last["update_ms"] / first["update_ms"]
        out["members_ratio"] = k
        out["plan_sublinear"] = out["plan_latency_ratio"] < k
    path = ROOT / "benchmarks" / "results" / "train_speed.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
