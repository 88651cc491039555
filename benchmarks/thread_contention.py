"""Update and planned-action time under CPU contention, per OpenMP setting (the table in tdmpc/threads.py).

    python benchmarks/thread_contention.py                  # CPU preset with tracking, 2 threads
    python benchmarks/thread_contention.py repeats=20 busy=1

For every setting (OpenMP's default spin count, ``GOMP_SPINCOUNT`` values, ``OMP_WAIT_POLICY=PASSIVE``, 1
thread) a fresh subprocess (OpenMP reads its settings once, when torch starts) times ``repeats`` CPU-preset
updates (+ ``tracker.step`` with every metric) and planned actions, once on the quiet machine and once
with ``busy`` CPU-bound processes beside it. Medians, the load average before each measurement.
Writes benchmarks/results/thread_contention.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.argv import parse_args  # noqa: E402

DEFAULTS = {"repeats": 10, "busy": 1, "threads": 2, "out": str(ROOT / "benchmarks" / "results" / "thread_contention.json")}
SETTINGS = {"default": {"GOMP_SPINCOUNT": "300000"}, "spin3000": {"GOMP_SPINCOUNT": "3000"},
            "spin10000": {"GOMP_SPINCOUNT": "10000"}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}}

CHILD = r"""
import json, sys, time
import numpy as np
from benchmarks.train_speed import build_tracked
threads, repeats = int(sys.argv[1]), int(sys.argv[2])
agent, buf, cfg, tracker, rng, obs = build_tracked("cpu", threads)
for i in range(2):
    agent.update(buf.sample(cfg.optim.batch_size, rng)); tracker.step(i); agent.act(obs)
us, ps = [], []
for i in range(repeats):
    t = time.perf_counter(); agent.update(buf.sample(cfg.optim.batch_size, rng)); tracker.step(i)
    us.append(time.perf_counter() - t)
    t = time.perf_counter(); agent.act(obs); ps.append(time.perf_counter() - t)
print(json.dumps({"update_ms": 1e3 * float(np.median(us)), "plan_ms": 1e3 * float(np.median(ps))}))
"""


def run(env_extra: dict, threads: int, repeats: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(env_extra, MUJOCO_GL="disable", PYTHONPATH=str(ROOT))
    load = os.getloadavg()[0]
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(repeats)], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return {**json.loads(out), "loadavg_before": load}


def main(args: dict) -> dict:
    cases = [(name, env, args["threads"]) for name, env in SETTINGS.items()] + [("1 thread", {}, 1)]
    rows = []
    for busy in (0, args["busy"]):
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            time.sleep(1.0)
            for name, env, threads in cases:
                rows.append({"setting": name, "threads": threads, "busy_processes": busy, **run(env, threads, args["repeats"])})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            for p in procs:
                p.kill()
    out = {"command": "python benchmarks/thread_contention.py " + " ".join(sys.argv[1:]), "rows": rows,
           "cpu_count": os.cpu_count()}
    Path(args["out"]).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main(parse_args(sys.argv[1:], DEFAULTS))
