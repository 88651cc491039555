"""Closed-loop check of an exported controller next to the PyTorch agent (``scripts/export.py check=true``).

For each of ``episodes`` env seeds ``seed, seed + 1, ...`` (dm_control task of the checkpoint,
``tdmpc.envs.make_env``):

1. the exported controller (:class:`pruning.deploy.Controller`, onnxruntime, noise from numpy seeded with the
   env seed) runs one episode; at every step the PyTorch agent is also asked for its action **given the same
   observation, warm start and noise** (``mode=plan``: ``TDMPC.act(..., noise=PlanNoise(...))``;
   ``mode=policy``: the policy mean), and the largest differences of the action (``max_action_diff``) and,
   planning, of the new MPPI mean (``max_mean_diff``) are recorded. A step whose action differs while the
   mean agrees to rounding is an elite-order flip between near-tied trajectory values (``docs/deploy.md``);
2. the PyTorch agent runs its own episode from the same env seed with its own torch RNG (seeded with the
   env seed): the return the trained agent gets, to compare returns with.

Prints one row per episode and the mean ± std, and writes ``check.json`` into the controller's folder.
``within_spread``: the difference of the mean returns is at most the larger episode-to-episode std; with one
episode there is no spread and it is ``None`` ("n/a"). The controller must have been exported from the bytes
of ``checkpoint`` (``controller.json``'s ``checkpoint_sha256``): a checkpoint replaced since the export (a
training run that went on) is refused, since the two sides would be different agents. Episodes run to the
task's own time limit unless ``max_episode_steps`` says otherwise.
Planned-action timings here are wall-clock on whatever else the machine runs: indicative only
(``benchmarks/deploy_latency.py`` measures latency).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

CHECK_FILE = "check.json"
ACTION_TOL = 1e-4  # steps whose exported action differs by more are counted (near-ties in the elite top-k)


def _noise_from_inputs(inputs: dict[str, np.ndarray], action_dim: int):
    """The :class:`tdmpc.planner.PlanNoise` of one ``planner.onnx`` call's inputs."""
    from tdmpc.planner import PlanNoise

    t = {k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}
    pi_eps = t.get("pi_eps", torch.zeros(t["prev_mean"].shape[0], 0, action_dim))
    return PlanNoise(pi_eps=pi_eps, sample_eps=t["sample_eps"], terminal_eps=t["terminal_eps"],
                     q_members=t["q_members"], gumbel_u=t["gumbel_u"], action_eps=torch.zeros(action_dim))


@torch.no_grad()
def torch_action(agent, obs: np.ndarray, mode: str, inputs: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The PyTorch agent's evaluation action for ``obs``.

    ``mode="policy"``: the policy mean. ``mode="plan"``: with ``inputs`` (a controller's
    :attr:`~pruning.deploy.Controller.last_inputs`) the planner is given that warm start and noise; without,
    it uses its own warm start and the torch RNG (as in ``Trainer.evaluate``).
    """
    obs_t = torch.as_tensor(obs, dtype=torch.float32)
    if mode == "policy":
        return agent.model.pi(agent.model.encode(obs_t.unsqueeze(0)))[0][0].numpy()
    if inputs is None:
        return agent.act(obs_t, eval_mode=True).numpy()
    agent.planner.prev_mean = torch.from_numpy(inputs["prev_mean"].copy())  # zeros == no warm start
    return agent.act(obs_t, eval_mode=True, noise=_noise_from_inputs(inputs, agent.action_dim)).numpy()


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a - b|``, ``inf`` where either side is not finite (``max(x, nan)`` would drop a NaN step)."""
    d = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    return float(d.max()) if np.isfinite(d).all() else float("inf")


def _exported_episode(env, ctrl, agent, env_seed: int, mode: str) -> dict:
    """One episode of the exported controller, with the PyTorch action on the same inputs at every step."""
    obs, _ = env.reset(seed=env_seed)
    ctrl.reset(seed=env_seed)
    ret, steps, max_diff, max_mean_diff, n_off, elapsed = 0.0, 0, 0.0, 0.0, 0, 0.0
    done = False
    while not done:
        start = time.perf_counter()
        action = ctrl.act(obs)
        elapsed += time.perf_counter() - start
        ref = torch_action(agent, obs, mode, ctrl.last_inputs if mode == "plan" else None)
        diff = _max_abs_diff(action, ref)
        max_diff, n_off = max(max_diff, diff), n_off + (diff > ACTION_TOL)
        if mode == "plan":  # the new MPPI mean: equal when only the elite order flipped (near-tied values)
            max_mean_diff = max(max_mean_diff, _max_abs_diff(ctrl.prev_mean, agent.planner.prev_mean.numpy()))
        obs, reward, terminated, truncated, _ = env.step(action)
        ret, steps, done = ret + float(reward), steps + 1, terminated or truncated
    return {"return_onnx": ret, "steps": steps, "max_action_diff": max_diff, "max_mean_diff": max_mean_diff,
            "steps_diff_gt_tol": n_off, "ms_per_action_onnx": 1e3 * elapsed / steps}


def _torch_episode(env, agent, env_seed: int, mode: str) -> dict:
    """One episode of the PyTorch agent with its own torch RNG seeded with ``env_seed``."""
    obs, _ = env.reset(seed=env_seed)
    torch.manual_seed(env_seed)
    agent.planner.reset()
    ret, steps, elapsed, done = 0.0, 0, 0.0, False
    while not done:
        start = time.perf_counter()
        action = torch_action(agent, obs, mode)
        elapsed += time.perf_counter() - start
        obs, reward, terminated, truncated, _ = env.step(action)
        ret, steps, done = ret + float(reward), steps + 1, terminated or truncated
    return {"return_torch": ret, "ms_per_action_torch": 1e3 * elapsed / steps}


def _summary(rows: list[dict]) -> dict:
    onnx_r = np.array([r["return_onnx"] for r in rows])
    torch_r = np.array([r["return_torch"] for r in rows])
    spread = float(max(onnx_r.std(), torch_r.std()))
    return {"return_onnx_mean": float(onnx_r.mean()), "return_onnx_std": float(onnx_r.std()),
            "return_torch_mean": float(torch_r.mean()), "return_torch_std": float(torch_r.std()),
            "return_diff": float(onnx_r.mean() - torch_r.mean()),
            # one episode: no spread to compare with (None, printed "n/a")
            "within_spread": bool(abs(onnx_r.mean() - torch_r.mean()) <= spread) if len(rows) > 1 else None,
            "max_action_diff": float(max(r["max_action_diff"] for r in rows)),
            "max_mean_diff": float(max(r["max_mean_diff"] for r in rows)),
            "steps_diff_gt_tol": int(sum(r["steps_diff_gt_tol"] for r in rows)),
            "steps": int(sum(r["steps"] for r in rows))}


def _artifact_format(spec: dict) -> str:
    """``pt2`` if ``controller.json`` names AOTInductor packages, else ``onnx``."""
    return "pt2" if any(str(f).endswith(".pt2") for f in (spec.get("files") or {}).values()) else "onnx"


def _print_table(rows: list[dict], summary: dict, mode: str, artifact_format: str) -> None:
    runtime = "AOTInductor package" if artifact_format == "pt2" else "onnxruntime"
    print(f"[check] mode={mode}: exported ({runtime}; the *_onnx columns) vs PyTorch, same env seeds", flush=True)
    print(f"{'seed':>6} {'steps':>6} {'return_onnx':>12} {'return_torch':>13} {'max|da|':>9} {'max|dmean|':>10} "
          f"{'ms/act onnx':>12} {'ms/act torch':>13}   (|da|, |dmean|: same obs, warm start and noise)")
    for r in rows:
        print(f"{r['seed']:>6} {r['steps']:>6} {r['return_onnx']:>12.2f} {r['return_torch']:>13.2f} "
              f"{r['max_action_diff']:>9.2e} {r['max_mean_diff']:>10.2e} {r['ms_per_action_onnx']:>12.2f} "
              f"{r['ms_per_action_torch']:>13.2f}")
    s = summary
    print(f"{'mean':>6} {s['steps']:>6} {s['return_onnx_mean']:>8.2f}±{s['return_onnx_std']:<5.1f} "
          f"{s['return_torch_mean']:>8.2f}±{s['return_torch_std']:<5.1f} {s['max_action_diff']:>9.2e} "
          f"{s['max_mean_diff']:>10.2e}  within spread: {'n/a' if s['within_spread'] is None else s['within_spread']}; steps with |da| > {ACTION_TOL:g}: "
          f"{s['steps_diff_gt_tol']}", flush=True)


def run_check(checkpoint: str | Path, controller_dir: str | Path, episodes: int = 3, seed: int = 1,
              mode: str | None = None, max_episode_steps: int | None = None, num_threads: int = 1) -> dict:
    """Run the check (module docstring), print the table, write ``check.json``; returns its content.

    ``mode`` ``None``: as the checkpoint's agent acts (``plan`` if ``planner.mpc``, else ``policy``); ``plan``
    for an agent that does not plan raises :class:`pruning.config.PruningConfigError` (the PyTorch side would
    act with its policy, so the comparison would be meaningless)."""
    from pruning.config import require
    from pruning.deploy import Controller
    from pruning.study.export import load_agent
    from tdmpc.envs import make_env

    torch.set_num_threads(num_threads)
    controller_dir = Path(controller_dir)
    agent, cfg, _, checkpoint_sha256 = load_agent(checkpoint)  # the hash of the bytes the agent came from
    mode = ("plan" if cfg.planner.mpc else "policy") if mode is None else mode
    require(mode == "policy" or cfg.planner.mpc, "mode", mode,
            "policy (the checkpoint's agent does not plan: planner.mpc=false)")
    ctrl = Controller.load(controller_dir, mode=mode, seed=seed, num_threads=num_threads)
    exported_from = ctrl.spec.get("checkpoint_sha256")
    require(exported_from in (None, checkpoint_sha256), "checkpoint", str(checkpoint),
            f"the checkpoint {controller_dir} was exported from (sha256 {str(exported_from)[:12]}; this file now "
            f"holds {checkpoint_sha256[:12]}: replaced since the export? export it again)")
    env = make_env(cfg.task, seed, cfg.action_repeat, max_episode_steps)
    rows = []
    for k in range(episodes):
        env_seed = seed + k
        row = {"seed": env_seed, **_exported_episode(env, ctrl, agent, env_seed, mode)}
        rows.append({**row, **_torch_episode(env, agent, env_seed, mode)})
    env.close()
    summary = _summary(rows)
    artifact_format = _artifact_format(ctrl.spec)
    _print_table(rows, summary, mode, artifact_format)
    result = {"task": cfg.task, "mode": mode, "artifact_format": artifact_format, "action_repeat": env.action_repeat,
              "max_episode_steps": max_episode_steps, "episode_length": env.episode_length, "num_threads": num_threads, "action_tol": ACTION_TOL,
              "episodes": rows, "summary": summary, "controller_dir": str(controller_dir),
              "checkpoint": str(checkpoint), "checkpoint_sha256": checkpoint_sha256,
              "load_average": list(os.getloadavg()), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (controller_dir / CHECK_FILE).write_text(json.dumps(result, indent=2) + "\n")
    print(f"[check] -> {controller_dir / CHECK_FILE}", flush=True)
    return result
