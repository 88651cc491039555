"""Batch-1 planned-action and policy-action latency of the deployed controller: eager PyTorch vs onnxruntime.

    python benchmarks/deploy_latency.py                                   # cpu preset, FLOPs budgets, 1 thread
    python benchmarks/deploy_latency.py repeats=20 rounds=3 budget=channels

Models: the ``model_size`` preset (default ``cpu``) on cartpole-swingup's shapes (obs 5, action 1, planner
from the preset), random weights (seed 0), dense and pruned with random scores, ``scope="global"``, latent
included (``latent=1``, the prune job's default). ``budget=flops`` (default): each ``ratio`` in ``ratios`` is
the fraction of **planned-action FLOPs** removed (:func:`pruning.study.cost_model.plan_flops`), met to within 0.5 %
by the FLOPs budget of ``pruning.prune`` (``cost_rows``; the achieved fraction is in
``flops_removed_plan``). ``budget=channels``: ``ratio`` is the fraction of channels removed.

Runtimes (all single-threaded, ``threads=1``): ``torch_eager`` (``MPPIPlanner.plan`` after the encoder,
the policy mean for the policy action), ``onnxruntime`` (:class:`pruning.deploy.Controller`, exported by
:func:`pruning.study.export.write_controller`; a planned action includes drawing its noise with numpy) and
``torch_compiled`` (:func:`compiled_runtime`: the agent's ``compile=true`` planner, noise drawn with torch;
``compiled=0`` leaves it out; compile times in ``compile_s``) and ``aotinductor`` (the same
:class:`pruning.deploy.Controller` on the ``format=pt2`` export, ``torch.export`` + AOTInductor, noise drawn
with numpy as for onnxruntime; ``pt2=0`` leaves it out; build times in ``pt2_build_s``).

Timing: every (model, runtime, action kind) is timed ``repeats`` single calls per round, the combinations
in turn, ``rounds`` times (interleaved: a slow phase of a shared machine hits all alike). Per row: median
and p99 over all calls of wall-clock latency (``latency_plan_ms``, ``p99_plan_ms``, ...) and the median of
the calling thread's CPU time (``*_cpu_ms``, robust to other processes on the core). The load average
before, after and at the end of every round is recorded: with a median round load above 1.5 (the benchmark's
own thread is ~1, so other work took more than half a core) or more than 10 % of the CPU time stolen by the
hypervisor while timing (``cpu_steal_pct``, :mod:`benchmarks.cpu_steal`) the figures are marked not final.

Writes benchmarks/results/deploy_latency.json (``out=...`` to change).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.argv import fail, parse_args  # noqa: E402
from benchmarks.cpu_steal import LOAD_LIMIT, STEAL_LIMIT_PCT, cpu_ticks, machine_busy, steal_pct  # noqa: E402
from pruning import model_groups, prune  # noqa: E402
from pruning.deploy import Controller  # noqa: E402
from pruning.measure import count_params  # noqa: E402
from pruning.study.cost_model import plan_flops, plan_rows, policy_action_flops  # noqa: E402
from pruning.study.export import write_controller  # noqa: E402
from tdmpc.agent import TDMPC  # noqa: E402
from tdmpc.config import TrainConfig, validate  # noqa: E402

TASK = "cartpole-swingup"
ENV_SPEC = {"obs_dim": 5, "action_dim": 1, "action_low": [-1.0], "action_high": [1.0], "episode_length": 125,
            "action_repeat": 8}  # cartpole-swingup (pruning.study.export.task_spec), fixed so no env is built here

def compiled_runtime(agent, obs: torch.Tensor) -> tuple[Callable, Callable, float]:
    """``torch_compiled``: a copy of ``agent`` with ``set_compile(True)`` (``torch.compile`` of the planner's
    ``plan_step``, noise drawn from the torch RNG per call) and the policy mean action compiled; the first call
    of each is made here, so its compile time is not in the latency: it is returned (seconds) with the two
    callables."""
    twin = copy.deepcopy(agent)
    twin.set_compile(True)
    model = twin.model
    policy = torch.compile(lambda o: model.pi(model.encode(o.unsqueeze(0)), eps=torch.zeros(1, model.action_dim))[0],
                           fullgraph=True, dynamic=False)

    @torch.no_grad()
    def plan():
        return twin.act(obs, eval_mode=True)

    @torch.no_grad()
    def pol():
        return policy(obs)

    t0 = time.perf_counter()
    plan(), pol()
    return plan, pol, time.perf_counter() - t0


def build_agent(size: str, ratio: float, prune_latent: bool, budget: str):
    """A TDMPC agent of ``size`` (random weights, seed 0) pruned by ``ratio`` of its planned-action FLOPs
    (``budget=flops``, exact: ``pruning.cost``) or of its channels, ranked by random scores; returns the
    agent, its config and the fraction of channels actually removed."""
    cfg = validate(TrainConfig(task=TASK, model_size=size, device="cpu", compile=False))
    torch.manual_seed(0)
    agent = TDMPC(ENV_SPEC["obs_dim"], ENV_SPEC["action_dim"], ENV_SPEC["episode_length"], cfg, torch.device("cpu"))
    channels = sum(g.size for g in model_groups(agent.model, couplings=prune_latent))
    if ratio > 0:
        groups = model_groups(agent.model, couplings=prune_latent)
        gen = torch.Generator().manual_seed(0)
        rows = plan_rows(agent.model, cfg.planner) if budget == "flops" else None
        prune(groups, {g.name: torch.rand(g.size, generator=gen) for g in groups}, ratio, scope="global",
              cost_rows=rows)
        agent.build_optimizers()
    agent.model.eval()
    removed = 1 - sum(g.size for g in model_groups(agent.model, couplings=prune_latent)) / channels
    return agent, cfg, removed


def runtimes(agent, cfg, tmp: Path, compiled: bool, pt2: bool = False
             ) -> tuple[dict[str, tuple[Callable, Callable]], float | None, float | None]:
    """``runtime -> (planned_action, policy_action)`` callables for one agent (batch-1 observation), the
    compile time of ``torch_compiled`` and the build time of the ``aotinductor`` export (``None`` without)."""
    obs_np = np.random.default_rng(0).standard_normal(ENV_SPEC["obs_dim"]).astype(np.float32)
    obs = torch.from_numpy(obs_np)
    model = agent.model

    @torch.no_grad()
    def torch_plan():
        return agent.act(obs, eval_mode=True)

    @torch.no_grad()
    def torch_policy():
        return model.pi(model.encode(obs.unsqueeze(0)))[0]

    write_controller(agent, cfg, ENV_SPEC, tmp)
    planner, policy = Controller.load(tmp, mode="plan", num_threads=1), Controller.load(tmp, mode="policy")
    out = {"torch_eager": (torch_plan, torch_policy),
           "onnxruntime": (lambda: planner.act(obs_np), lambda: policy.act(obs_np))}
    compile_s = build_s = None
    if compiled:
        plan_fn, policy_fn, compile_s = compiled_runtime(agent, obs)
        out["torch_compiled"] = (plan_fn, policy_fn)
    if pt2:
        t0 = time.perf_counter()
        write_controller(agent, cfg, ENV_SPEC, tmp / "pt2", fmt="pt2")
        build_s = time.perf_counter() - t0
        aoti_plan = Controller.load(tmp / "pt2", mode="plan", num_threads=1)
        aoti_policy = Controller.load(tmp / "pt2", mode="policy", num_threads=1)
        out["aotinductor"] = (lambda: aoti_plan.act(obs_np), lambda: aoti_policy.act(obs_np))
    return out, compile_s, build_s


def time_calls(fn: Callable, n: int) -> tuple[list[float], list[float]]:
    """Wall-clock and thread-CPU milliseconds of ``n`` single calls of ``fn``."""
    wall, cpu = [], []
    for _ in range(n):
        w0, c0 = time.perf_counter(), time.thread_time()
        fn()
        wall.append((time.perf_counter() - w0) * 1e3)
        cpu.append((time.thread_time() - c0) * 1e3)
    return wall, cpu


def measure(fns: dict, repeats: int, rounds: int, warmup: int = 5) -> tuple[dict, list[float], float | None]:
    """Interleaved timing of every ``(ratio, runtime, kind)`` callable in ``fns``; returns its samples, the
    1-minute load average at the end of every round (the benchmark's own thread counts ~1) and the CPU steal
    (%) over the rounds (:mod:`benchmarks.cpu_steal`; ``None`` where /proc/stat is unreadable)."""
    samples, loads = {key: ([], []) for key in fns}, []
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    ticks = cpu_ticks()
    for rnd in range(rounds):
        for key, fn in fns.items():
            wall, cpu = time_calls(fn, repeats)
            samples[key][0].extend(wall)
            samples[key][1].extend(cpu)
        loads.append(os.getloadavg()[0])
        print(f"  round {rnd + 1}/{rounds} done (load average {loads[-1]:.2f})", flush=True)
    return samples, loads, steal_pct(ticks, cpu_ticks())


def make_row(ratio: float, runtime: str, agent, cfg, channel_ratio: float, dense_flops: int, samples: dict,
             budget: str) -> dict:
    row = {"runtime": runtime, "ratio": ratio, "budget": budget, "channel_ratio": round(channel_ratio, 5),
           "flops_plan": plan_flops(agent.model, cfg.planner), "flops_policy": policy_action_flops(agent.model),
           "params": count_params(agent.model)["total"], "widths": agent.model.widths()}
    row["flops_removed_plan"] = 1 - row["flops_plan"] / dense_flops
    for kind in ("plan", "policy"):
        wall, cpu = (np.asarray(x) for x in samples[(ratio, runtime, kind)])
        row[f"latency_{kind}_ms"] = float(np.median(wall))
        row[f"p99_{kind}_ms"] = float(np.percentile(wall, 99))
        row[f"latency_{kind}_cpu_ms"] = float(np.median(cpu))
        row[f"samples_{kind}"] = int(wall.size)
    row["rate_plan_hz"] = 1e3 / row["latency_plan_ms"]
    return row


def bar(rows: list[dict], runtime: str = "onnxruntime") -> dict | None:
    """The issue's bar: under ``runtime`` at 50 % removed, latency fall >= 0.85 x FLOPs fall (plan)."""
    ort_rows = {r["ratio"]: r for r in rows if r["runtime"] == runtime}
    if 0.0 not in ort_rows or 0.5 not in ort_rows:
        return None
    d, p = ort_rows[0.0], ort_rows[0.5]
    flops_fall = d["flops_plan"] / p["flops_plan"]
    out = {"flops_fall": flops_fall}
    for clock in ("", "_cpu"):
        fall = d[f"latency_plan{clock}_ms"] / p[f"latency_plan{clock}_ms"]
        out[f"latency_fall{clock}"], out[f"ratio{clock}"] = fall, fall / flops_fall
        out[f"passed{clock}"] = fall / flops_fall >= 0.85
    return out


DEFAULTS = {"size": "cpu", "ratios": "0,0.25,0.5,0.75", "budget": "flops", "latent": True, "repeats": 50,
            "rounds": 5, "compiled": True, "pt2": True, "out": str(ROOT / "benchmarks" / "results" / "deploy_latency.json")}


def parse(argv: list[str]) -> dict:
    args = parse_args(argv, DEFAULTS)
    if args["budget"] not in ("flops", "channels"):
        fail(f"invalid argument budget={args['budget']!r}; allowed: flops|channels")
    return args


def main(argv: list[str]) -> None:
    args = parse(argv)
    torch.set_num_threads(1)
    ratios = sorted({0.0, *(float(x) for x in args["ratios"].split(","))})
    latent, size, budget = args["latent"], args["size"], args["budget"]
    load_before, started = list(os.getloadavg()), time.time()
    agents, fns, compile_s, build_s = {}, {}, [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in ratios:
            agent, cfg, cr = build_agent(size, r, latent, budget)
            agents[r] = (agent, cfg, cr)
            fns_r, seconds, built = runtimes(agent, cfg, Path(tmp) / f"r{r}", args["compiled"], args["pt2"])
            for runtime, (plan_fn, policy_fn) in fns_r.items():
                fns[(r, runtime, "plan")], fns[(r, runtime, "policy")] = plan_fn, policy_fn
            if seconds is not None:
                compile_s.append(seconds)
            if built is not None:
                build_s.append(built)
            print(f"ratio {r}: channel ratio {cr:.4f}, plan {plan_flops(agent.model, cfg.planner) / 1e6:.1f} MFLOP",
                  flush=True)
        samples, round_loads, steal = measure(fns, int(args["repeats"]), int(args["rounds"]))
    dense_flops = plan_flops(agents[0.0][0].model, agents[0.0][1].planner)
    rows = [make_row(r, rt, agents[r][0], agents[r][1], agents[r][2], dense_flops, samples, budget)
            for (r, rt, kind) in fns if kind == "plan"]
    load_after = list(os.getloadavg())
    loaded = machine_busy(round_loads, steal)
    result = {"command": " ".join(["python benchmarks/deploy_latency.py", *argv]), "model_size": size,
              "task_shapes": TASK, "budget": budget, "prune_latent": latent, "threads": 1,
              "repeats": int(args["repeats"]), "rounds": int(args["rounds"]),
              "load_average_before": load_before, "load_average_after": load_after,
              "load_average_rounds": [round(x, 2) for x in round_loads], "cpu_count": os.cpu_count(),
              "cpu_steal_pct": None if steal is None else round(steal, 1),
              "final": not loaded, "note": (f"machine loaded (median load average over the rounds > {LOAD_LIMIT:g}: other work used more than half a "
                                            f"core; or CPU steal > {STEAL_LIMIT_PCT:g} %): indicative figures, not final")
              if loaded else "machine idle enough for final figures",
              "compile_s": [round(x, 1) for x in compile_s], "pt2_build_s": [round(x, 1) for x in build_s],
              "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
              "machine": platform.processor() or platform.machine(), "bar": bar(rows), "bar_torch_compiled": bar(rows, "torch_compiled"),
              "bar_aotinductor": bar(rows, "aotinductor"), "rows": rows,
              "wall_clock_s": round(time.time() - started, 1)}
    for r in rows:
        print(f"{r['runtime']:>12} ratio={r['ratio']:.2f} (channels {r['channel_ratio']:.3f}): plan "
              f"{r['flops_plan'] / 1e6:7.1f} MFLOP {r['latency_plan_ms']:7.2f} ms (p99 {r['p99_plan_ms']:7.2f}, "
              f"cpu {r['latency_plan_cpu_ms']:7.2f}) = {r['rate_plan_hz']:6.1f} Hz; policy "
              f"{r['latency_policy_ms']:.3f} ms (p99 {r['p99_policy_ms']:.3f})", flush=True)
    path = Path(args["out"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"bar: {result['bar']}\nload average {load_before} -> {load_after}; wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
