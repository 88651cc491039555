"""Cost of importance tracking: one TD-MPC update with and without ``ImportanceTracker.step``.

    python benchmarks/tracking_overhead.py                   # cpu preset, every registered metric, 2 threads
    python benchmarks/tracking_overhead.py threads=1 repeats=30 number=4 gate_interval=10
    python benchmarks/tracking_overhead.py threads=1 compile=true   # the compiled update (gate hooks traced)

Same process, same agent, same replay buffer (cartpole-swingup shapes, as benchmarks/train_speed.py).
Each repeat runs ``number`` updates without the tracker (its gate hooks removed) and ``number`` updates
with the gate hooks capturing activations x output-gradients, each followed by ``tracker.step``, in
alternating order (interleaved, so machine noise hits both alike); each block is timed by the wall clock
and by the process's CPU time (``time.process_time``: on a machine shared with other work it counts the
CPU this process got rather than the time it waited for a core). The result is the median (and IQR) over
repeats of the per-update time, ``overhead_pct = 100 * (median_with / median_without - 1)`` (wall clock)
and ``overhead_cpu_pct`` (CPU time), with the load average before and after the run; ``overhead_paired``
is the median of the per-repeat ratios (the two blocks of one repeat run back to back) with a bootstrap
95 % interval, the statistic least affected by the machine's drift. Because the
difference is small next to the noise of a shared machine, ``tracker.step`` alone is also timed
(``blocked_autorange``, after an update so that every ``.grad`` is populated) and reported relative to the
update (``step_pct``); its repeats find the gate capture already taken (no gate moments) and its data in
cache, so ``tracker_step_in_situ`` also gives the median of the steps timed inside the "with" blocks.
Snapshots (every ``snapshot_interval`` updates, not per step) are timed separately.
With ``parts=true`` two more blocks join the interleaved rotation, to split the overhead where it arises:
"probes" (the gate hooks attached, their autograd nodes run, but the products are skipped: the hooks'
Python, the identity nodes, and the input gradient of the detached latent that a probe makes autograd
compute) and "capture" (hooks with the per-sample products and sums, no ``tracker.step``); ``parts`` in the
JSON gives each block's median and its paired overhead over "without", and the differences "probes",
"products" (capture - probes) and "step" (with - capture) in ms. The products are skipped by replacing
the capture's ``_add`` on the instance, in this benchmark only.
With ``compile=true`` the agent's update is compiled (``torch.compile``): "without" runs the hook-free graph,
"with" the graph traced with the gate hooks (``pruning.gates``: gate leaves instead of backward callbacks);
``warmup_s`` (the first two updates of each, both compiles included) is reported next to the figures.
Writes benchmarks/results/tracking_overhead.json (``out=<name>`` for another file name in that folder).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.benchmark import Timer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.argv import fail, parse_args  # noqa: E402
from benchmarks.cpu_steal import cpu_ticks, steal_pct  # noqa: E402
from benchmarks.result_file import write_result  # noqa: E402
from benchmarks.train_speed import build  # noqa: E402
from pruning.config import TrackingConfig  # noqa: E402
from pruning.metrics import metric_names  # noqa: E402
from pruning.tracker import ImportanceTracker  # noqa: E402

BUDGET_PCT = 5.0


def _stats(x: list[float]) -> dict:
    q25, q50, q75 = np.percentile(np.asarray(x) * 1e3, [25, 50, 75])
    return {"median_ms": float(q50), "iqr_ms": float(q75 - q25), "repeats": len(x)}


DEFAULTS = {"model_size": "cpu", "threads": 2, "repeats": 20, "number": 3, "min_run_time": 2.0,
            "metrics": "", "gate_interval": 1, "compile": False, "parts": False,
            "out": "tracking_overhead.json"}  # metrics "": all registered


def _paired(with_: list[float], without: list[float], resamples: int = 2000) -> dict:
    """Median over repeats of the per-repeat overhead ``100 * (with_r / without_r - 1)`` (the two blocks of
    a repeat run back to back, so slow drifts of a shared machine cancel in the ratio), with a percentile
    bootstrap 95 % interval of that median (resampling repeats; seed 0)."""
    pct = 100.0 * (np.asarray(with_) / np.asarray(without) - 1.0)
    rng = np.random.default_rng(0)
    boot = np.median(rng.choice(pct, size=(resamples, len(pct)), replace=True), axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"median_pct": float(np.median(pct)), "ci95_pct": [float(lo), float(hi)], "repeats": len(pct)}


def _interleaved(agent: Any, buf: Any, cfg: Any, tracker: ImportanceTracker, repeats: int, number: int,
                 parts: bool = False) -> dict:
    """Per-update wall-clock and CPU seconds of ``number`` updates without / with tracking (and, with
    ``parts``, the "probes" and "capture" blocks of the module doc), in a rotating order."""
    rng = np.random.default_rng(0)
    counter = [0]

    def update():
        agent.update(buf.sample(cfg.optim.batch_size, rng))

    step_s: list[float] = []  # tracker.step inside the timed "with" blocks (its data as the update left it)

    def update_and_track():
        update()
        counter[0] += 1
        t0 = time.perf_counter()
        tracker.step(counter[0])
        step_s.append(time.perf_counter() - t0)

    def update_and_drop():  # "probes" / "capture": the update's gate evidence is dropped, no tracker.step
        update()
        tracker.gates.reset()

    fns = {"without": update, "with": update_and_track, "probes": update_and_drop, "capture": update_and_drop}
    names = ("without", "probes", "capture", "with") if parts else ("without", "with")

    def set_hooks(name: str) -> None:
        c = tracker.cfg
        if name == "without" or c.gate_interval == 1:  # without: no gate hooks either
            tracker.set_capture(name != "without")
        else:  # hooks on exactly for the next update if it is a gate update, as tracker.step leaves them (a
            nxt = counter[0] + 1  # "without" block before turned them off)
            tracker.set_capture(nxt % c.interval == 0 and nxt % c.gate_interval == 0)
        if tracker.gates is not None:
            if name == "probes":
                tracker.gates._add = lambda *args: None  # the products skipped (this instance only)
            else:
                tracker.gates.__dict__.pop("_add", None)

    w0 = time.perf_counter()
    for name in names * 2:  # warm-up (compiled: every compile)
        set_hooks(name)
        fns[name]()
    set_hooks("with")
    while counter[0] % tracker.cfg.gate_interval:  # up to a gate update: its hooked graph compiled here too
        update_and_track()
    warmup = time.perf_counter() - w0
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        if parts:  # every block in every position: rotate, and reverse the rotation every other cycle
            k = r % len(names)
            order = names[k:] + names[:k]
            order = order if (r // len(names)) % 2 == 0 else order[::-1]
        else:
            order = names if r % 2 == 0 else names[::-1]
        for name in order:
            set_hooks(name)
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(number):
                fns[name]()
            wall[name].append((time.perf_counter() - w0) / number)
            cpu[name].append((time.process_time() - c0) / number)
        print(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{n} {wall[n][-1] * 1e3:7.1f} ms" for n in names), flush=True)
    if tracker.gates is not None:
        tracker.gates.__dict__.pop("_add", None)
    update()  # fresh gradients for the direct timing of tracker.step
    return {"wall": wall, "cpu": cpu, "warmup_s": warmup, "step_in_situ": step_s[-repeats * number:]}


def _parts(wall: dict[str, list[float]]) -> dict:
    """Each block's median and paired overhead over "without", and the split of the overhead (ms)."""
    med = {n: float(np.median(v)) * 1e3 for n, v in wall.items()}
    out = {n: {"median_ms": med[n], "overhead_paired": _paired(wall[n], wall["without"])}
           for n in wall if n != "without"}
    out["split_ms"] = {"probes": med["probes"] - med["without"], "products": med["capture"] - med["probes"],
                       "step": med["with"] - med["capture"]}
    return out


def main(argv: list[str]) -> dict:
    args = parse_args(argv, DEFAULTS)
    if args["parts"] and (args["compile"] or args["gate_interval"] != 1):
        fail(f"invalid argument parts={args['parts']!r} with compile={args['compile']!r} gate_interval="
             f"{args['gate_interval']!r}; allowed: parts=true with the eager update and gate_interval=1 (its blocks "
             "skip the eager hooks' products, which a compiled update does not run)")
    threads, repeats, number = args["threads"], args["repeats"], args["number"]
    torch.set_num_threads(threads)
    agent, buf, cfg = build(args["model_size"], torch.device("cpu"))
    if args["compile"]:
        agent.set_compile(True)
    metrics = args["metrics"].split(",") if args["metrics"] else list(metric_names())
    tcfg = TrackingConfig(metrics=metrics, snapshot_interval=0, gate_interval=args["gate_interval"])
    tracker = ImportanceTracker(agent.model, tcfg, samples=agent.cfg.optim.batch_size)
    load_before, ticks_before = os.getloadavg(), cpu_ticks()
    t = _interleaved(agent, buf, cfg, tracker, repeats, number, parts=bool(args["parts"]))
    load_after, steal = os.getloadavg(), steal_pct(ticks_before, cpu_ticks())
    step = Timer("t.step(1)", globals={"t": tracker}, num_threads=threads).blocked_autorange(
        min_run_time=args["min_run_time"])
    snap = Timer("t.snapshot(1)", globals={"t": tracker}, num_threads=threads).blocked_autorange(
        min_run_time=args["min_run_time"])
    without, with_ = _stats(t["wall"]["without"]), _stats(t["wall"]["with"])
    cpu_without, cpu_with = _stats(t["cpu"]["without"]), _stats(t["cpu"]["with"])
    overhead = 100.0 * (with_["median_ms"] / without["median_ms"] - 1.0)
    overhead_cpu = 100.0 * (cpu_with["median_ms"] / cpu_without["median_ms"] - 1.0)
    paired = _paired(t["wall"]["with"], t["wall"]["without"])
    step_ms = step.median * 1e3
    step_pct = 100.0 * step_ms / without["median_ms"]
    out = {
        "command": "python benchmarks/tracking_overhead.py " + " ".join(argv),
        "model_size": args["model_size"], "device": "cpu", "threads": threads, "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "metrics": tcfg.metrics, "groups": len(tracker.groups), "channels": tracker.layout.num_channels,
        "updates_per_repeat": number, "gate_interval": tcfg.gate_interval, "compile": bool(args["compile"]),
        "warmup_s": t["warmup_s"],
        "update_without_tracker": without, "update_with_tracker": with_, "overhead_pct": overhead,
        "cpu_time_without_tracker": cpu_without, "cpu_time_with_tracker": cpu_with,
        "overhead_cpu_pct": overhead_cpu, "overhead_paired": paired,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "cpu_steal_pct": None if steal is None else round(steal, 1),
        "tracker_step": {"median_ms": step_ms, "iqr_ms": step.iqr * 1e3, "repeats": len(step.times)},
        "step_pct": step_pct,
        "tracker_step_in_situ": _stats(t["step_in_situ"]),
        "snapshot": {"median_ms": snap.median * 1e3, "iqr_ms": snap.iqr * 1e3,
                     "note": "once every snapshot_interval updates (default 500)"},
        "parts": _parts(t["wall"]) if args["parts"] else None,
        "budget_pct": BUDGET_PCT, "within_budget": bool(max(overhead, step_pct) <= BUDGET_PCT),
    }
    print(f"update {without['median_ms']:.1f} ms (IQR {without['iqr_ms']:.1f}) without, "
          f"{with_['median_ms']:.1f} ms (IQR {with_['iqr_ms']:.1f}) with tracker: overhead {overhead:+.2f} % "
          f"(CPU time {overhead_cpu:+.2f} %; paired per repeat {paired['median_pct']:+.2f} %, 95 % CI "
          f"[{paired['ci95_pct'][0]:+.2f}, {paired['ci95_pct'][1]:+.2f}]; load average {load_before[0]:.2f} -> {load_after[0]:.2f}); "
          f"tracker.step alone {step_ms:.2f} ms = {step_pct:.2f} % of an update (in situ "
          f"{out['tracker_step_in_situ']['median_ms']:.2f} ms); snapshot {snap.median * 1e3:.1f} ms")
    if out["parts"]:
        sp, pp = out["parts"]["split_ms"], out["parts"]
        print("parts (paired overhead over 'without'): " + ", ".join(
            f"{n} {pp[n]['overhead_paired']['median_pct']:+.2f} %" for n in ("probes", "capture", "with"))
            + f"; split: probes {sp['probes']:.2f} ms, products {sp['products']:.2f} ms, step {sp['step']:.2f} ms")
    write_result(ROOT / "benchmarks" / "results" / Path(args["out"]).name, out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
