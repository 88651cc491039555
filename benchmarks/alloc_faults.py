"""Page faults and time of a CPU-preset update and planned action, glibc's malloc defaults vs tdmpc.allocator.

    python benchmarks/alloc_faults.py                       # 1 thread, 5 rounds
    python benchmarks/alloc_faults.py threads=2 rounds=7

``tdmpc.allocator.tune`` (called when ``tdmpc`` is imported) cannot be undone inside a process, so every
measurement is a fresh subprocess: in each round one with glibc's defaults (``CA_PRUNE_MALLOC=default``) and
one tuned, in alternating order (interleaved, so machine drift hits both alike). Each subprocess builds the
benchmark agent of ``benchmarks/train_speed.py`` (same weights and replay data every time), warms up, then
times ``number`` untracked updates, ``number`` updates tracked with every registered metric (gate hooks and
``tracker.step``) and ``2 * number`` planned actions, counting minor page faults (``getrusage``) over each.
Reported: medians over rounds of the per-call milliseconds and faults, the tuned / default time ratio of
each round (median), the peak resident memory, load average and CPU steal.
Writes benchmarks/results/alloc_faults.json (``out=<name>`` for another file name in that folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.argv import parse_args  # noqa: E402
from benchmarks.cpu_steal import cpu_ticks, steal_pct  # noqa: E402
from benchmarks.result_file import write_result  # noqa: E402
from tdmpc import allocator  # noqa: E402

DEFAULTS = {"threads": 1, "rounds": 5, "number": 12, "out": "alloc_faults.json"}
MODES = {"default": {allocator.OPT_OUT: "default"}, "tuned": {}}

CHILD = r"""
import json, resource, sys, time
import tdmpc.allocator
from benchmarks.train_speed import build_tracked
threads, number = int(sys.argv[1]), int(sys.argv[2])
agent, buf, cfg, tracker, rng, obs = build_tracked("cpu", threads)
step = [0]
def update():
    agent.update(buf.sample(cfg.optim.batch_size, rng))
def tracked():
    update(); step[0] += 1; tracker.step(step[0])
def plan():
    agent.act(obs)
def timed(fn, hooks, n):
    tracker.set_capture(hooks)
    fn(); fn()  # warm-up (and the capture buffers of a fresh hook state)
    f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range(n):
        fn()
    t = time.perf_counter() - t0
    return {"ms": 1e3 * t / n, "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n}
out = {"allocator": tdmpc.allocator.state, "update": timed(update, False, number),
       "update_tracked": timed(tracked, True, number), "plan": timed(plan, False, 2 * number),
       "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
print(json.dumps(out))
"""


def child(mode: str, threads: int, number: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (allocator.OPT_OUT, *allocator.ENV_KNOBS)}
    env.update(MODES[mode], MUJOCO_GL="disable", PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(number)], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Medians over rounds per mode and call, and the per-round tuned / default time ratio (median)."""
    calls = ("update", "update_tracked", "plan")
    out: dict = {mode: {c: {"median_ms": float(np.median([r[c]["ms"] for r in rs])),
                             "faults_per_call": float(np.median([r[c]["faults"] for r in rs]))} for c in calls}
                 for mode, rs in runs.items()}
    for mode, rs in runs.items():
        out[mode]["maxrss_mb"] = float(np.median([r["maxrss_mb"] for r in rs]))
        out[mode]["allocator"] = rs[0]["allocator"]
    out["tuned_over_default"] = {c: float(np.median([t[c]["ms"] / d[c]["ms"] for t, d in
                                                     zip(runs["tuned"], runs["default"])])) for c in calls}
    for mode in runs:
        u, t = out[mode]["update"]["median_ms"], out[mode]["update_tracked"]["median_ms"]
        out[mode]["tracking_overhead_pct"] = 100.0 * (t / u - 1.0)
    return out


def main(argv: list[str]) -> dict:
    args = parse_args(argv, DEFAULTS)
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    load_before, ticks = os.getloadavg(), cpu_ticks()
    for r in range(args["rounds"]):
        for mode in (tuple(MODES) if r % 2 == 0 else tuple(reversed(MODES))):
            runs[mode].append(child(mode, args["threads"], args["number"]))
            print(f"round {r + 1}/{args['rounds']} {mode:8s}: " + ", ".join(
                f"{c} {runs[mode][-1][c]['ms']:.1f} ms ({runs[mode][-1][c]['faults']:.0f} faults)"
                for c in ("update", "update_tracked", "plan")), flush=True)
    steal = steal_pct(ticks, cpu_ticks())
    out = {"command": "python benchmarks/alloc_faults.py " + " ".join(argv), "threads": args["threads"],
           "rounds": args["rounds"], "number": args["number"], **summarise(runs), "runs": runs,
           "load_average_before": [round(x, 2) for x in load_before],
           "load_average_after": [round(x, 2) for x in os.getloadavg()],
           "cpu_steal_pct": None if steal is None else round(steal, 1)}
    print(json.dumps({k: out[k] for k in ("default", "tuned", "tuned_over_default")}, indent=1))
    write_result(ROOT / "benchmarks" / "results" / Path(args["out"]).name, out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
