"""What pruning buys: parameters, analytic FLOPs and measured latency of a model that declares components.

**Parameters** (:func:`count_params`): per declared component and ``total`` (the sum over the
components, each parameter counted once). Shape-tied copies (``model.shape_tied()``, e.g. the TD-MPC
target Q-ensemble) are reported under their own attribute name (``"target_qs"``) and are *not* in
``total``: they are an EMA copy that is never trained nor used for acting.

**FLOPs** are the matrix-multiply FLOPs, exactly what :class:`torch.utils.flop_counter.FlopCounterMode`
counts (``mm``, ``addmm``, ``bmm``, ``baddbmm``; bias additions, LayerNorm, activations, softmax and
the planner's elementwise arithmetic are not counted). An ``nn.Linear`` with ``in`` inputs and ``out``
outputs applied to ``B`` rows costs

    F_linear(B) = 2 · B · in · out

(one multiply and one add per weight per row), so an MLP applied to ``B`` rows costs
``F_mlp(B) = Σ_linears 2 · B · in_k · out_k``. The sums are written out here instead of tracing with
``FlopCounterMode`` because the planner's count depends on the configuration (iterations, samples,
horizon) and must be available without running it; the tests check both agree exactly.

For a TD-MPC world model (duck-typed: ``encoder``,
``dynamics``, ``reward``, ``qs`` with ``.members``, ``policy``):

- one **policy action** (``TDMPC.act`` with ``planner.mpc=False``):
  ``F_enc(1) + F_pi(1)``;
- one **planned action** (``TDMPC.act`` = encoder + ``MPPIPlanner.plan`` for one observation), with
  horizon ``H``, ``I`` iterations, ``N`` samples, ``P = num_pi_trajs`` policy trajectories,
  ``n = N + P`` and ``q = min(2, num_q)`` Q-members decoded for the terminal value:

      F_plan = F_enc(1)
             + [P > 0] · (H · F_pi(P) + (H - 1) · F_dyn(P))                 policy-prior rollouts
             + I · (H · (F_rew(n) + F_dyn(n)) + F_pi(n) + q · F_Q1(n))      estimate_value per iteration

  where ``F_Q1`` is one Q-member (all members share their widths). ``estimate_value`` evaluates the
  reward and the dynamics at every horizon step (the last dynamics step produces the terminal latent),
  the policy once for the terminal action and ``Q(..., return_type="avg")`` on two random members.

**Latency** (:func:`measure_latency`, :func:`tdmpc_latency`): ``torch.utils.benchmark.Timer`` with
``blocked_autorange``, single-threaded by default, a batch-1 observation, CUDA synchronised inside
the timed statement. Returns plain dicts ``{"median_ms", "iqr_ms", "repeats"}``.

This module does not import ``tdmpc``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn
from torch.utils.benchmark import Timer

#: Components of a TD-MPC world model (the cost model of a planned action below is TD-MPC's).
TDMPC_COMPONENTS = ("encoder", "dynamics", "reward", "qs", "policy")

# ---------------------------------------------------------------------------------------- params


def _tied_names(model: nn.Module) -> dict[str, nn.Module]:
    """Attribute names of the shape-tied copies of ``model`` (``{"target_qs": module}``)."""
    tied = list(model.shape_tied()) if callable(getattr(model, "shape_tied", None)) else []
    names = {id(m): n for n, m in model.named_modules() if n}
    out = {}
    for _, copy in tied:
        if id(copy) not in names:
            raise ValueError(f"shape-tied copy {type(copy).__name__} is not a submodule of the model")
        out[names[id(copy)]] = copy
    return out


def _numel(module: nn.Module, seen: set[int]) -> int:
    n = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def count_params(model: nn.Module) -> dict[str, int]:
    """Parameters per component, ``total`` over the components, and tied copies separately.

    ``{"encoder": n, ..., "total": sum of the components, "target_qs": n}``: a parameter shared by two
    components is counted once (in the first); tied copies are listed under their attribute name and
    excluded from ``total``.
    """
    components = getattr(model, "components", None)
    if not isinstance(components, Mapping) or not components:
        raise ValueError(f"{type(model).__name__} does not declare its components (a `components` mapping)")
    seen: set[int] = set()
    out = {name: _numel(module, seen) for name, module in components.items()}
    if "total" in out:
        raise ValueError("a component must not be named 'total'")
    out["total"] = sum(out.values())
    for name, module in _tied_names(model).items():
        out[name] = sum(p.numel() for p in module.parameters())
    return out


# ---------------------------------------------------------------------------------------- FLOPs


def mlp_flops(module: nn.Module, batch: int) -> int:
    """``Σ 2 · batch · in · out`` over every ``nn.Linear`` in ``module`` (each applied to ``batch`` rows).

    Exact for a ``Sequential`` MLP (and for an ensemble evaluated on all members); the count
    ``FlopCounterMode`` reports for ``module(x)`` with ``x`` of shape ``(batch, in)``.
    """
    return sum(2 * batch * m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def component_flops(model: nn.Module, batch: int = 1) -> dict[str, int]:
    """:func:`mlp_flops` of every declared component at ``batch`` rows, and their ``total``."""
    out = {name: mlp_flops(m, batch) for name, m in model.components.items()}
    out["total"] = sum(out.values())
    return out


def _tdmpc_parts(model: nn.Module) -> dict[str, nn.Module]:
    comps = dict(model.components)
    missing = [c for c in TDMPC_COMPONENTS if c not in comps]
    if missing:
        raise ValueError(f"not a TD-MPC world model: components {missing} missing")
    members = getattr(comps["qs"], "members", None)
    if not isinstance(members, nn.ModuleList) or len(members) == 0:
        raise ValueError("not a TD-MPC world model: qs needs a non-empty .members ModuleList")
    comps["q1"] = members[0]
    comps["num_q"] = len(members)
    return comps


def policy_action_flops(model: nn.Module) -> int:
    """FLOPs of one policy-prior action: ``F_enc(1) + F_pi(1)``."""
    c = _tdmpc_parts(model)
    return mlp_flops(c["encoder"], 1) + mlp_flops(c["policy"], 1)


def plan_flops(model: nn.Module, planner_cfg: Any, breakdown: bool = False) -> int | dict[str, int]:
    """FLOPs of one planned action (encoder + ``MPPIPlanner.plan``), see the module docstring.

    ``planner_cfg`` needs ``iterations``, ``num_samples``, ``num_pi_trajs`` and ``horizon``. With
    ``breakdown=True`` returns ``{"encoder", "pi_rollouts", "dynamics", "reward", "policy", "q", "total"}``.
    """
    calls = plan_calls(model, planner_cfg)
    parts = {part: sum(rows * mlp_flops(module, 1) for module, rows in items) for part, items in calls.items()}
    parts["total"] = sum(parts.values())
    return parts if breakdown else parts["total"]


def plan_calls(model: nn.Module, planner_cfg: Any) -> dict[str, list[tuple[nn.Module, float]]]:
    """The call structure of one planned action: part -> ``[(module, rows it is applied to)]``.

    The one place that mirrors ``MPPIPlanner.plan`` (see the module docstring for the formula): the
    encoder on 1 row; the policy-prior rollouts (policy on ``P`` rows at each of ``H`` steps, dynamics
    on ``P`` rows at ``H - 1``); per iteration, dynamics and reward on ``n`` rows at each horizon step, the
    policy on ``n`` rows, and ``q = min(2, num_q)`` Q-members on ``n`` rows. Q-members share their widths,
    so each member is listed with ``q / num_q`` of those rows (their sum is exact).
    """
    c = _tdmpc_parts(model)
    H, iters = int(planner_cfg.horizon), int(planner_cfg.iterations)
    P = int(planner_cfg.num_pi_trajs)
    n = int(planner_cfg.num_samples) + P
    q_eval = min(2, c["num_q"])  # WorldModel.Q(return_type="avg") decodes two random members
    members = list(c["qs"].members)
    return {
        "encoder": [(c["encoder"], 1)],
        "pi_rollouts": [(c["policy"], H * P), (c["dynamics"], (H - 1) * P)] if P > 0 else [],
        "dynamics": [(c["dynamics"], iters * H * n)],
        "reward": [(c["reward"], iters * H * n)],
        "policy": [(c["policy"], iters * n)],
        "q": [(m, iters * n * q_eval / len(members)) for m in members],
    }


def plan_rows(model: nn.Module, planner_cfg: Any) -> dict[nn.Linear, float]:
    """Rows every ``nn.Linear`` of the model is applied to in one planned action (:func:`plan_calls`):
    the input of :class:`pruning.cost.LinearCost` for a planned-action FLOPs budget."""
    rows: dict[nn.Linear, float] = {}
    for items in plan_calls(model, planner_cfg).values():
        for module, r in items:
            for lin in module.modules():
                if isinstance(lin, nn.Linear):
                    rows[lin] = rows.get(lin, 0) + r
    return rows


# ---------------------------------------------------------------------------------------- latency

CLOCKS = ("wall", "thread")


def measure_latency(
    fn: Callable[[], Any],
    num_threads: int = 1,
    min_run_time: float = 1.0,
    device: torch.device | str | None = None,
    warmup: int = 3,
    clock: str = "wall",
) -> dict[str, float]:
    """Median and inter-quartile range of ``fn()`` in ms (``Timer.blocked_autorange``).

    ``device`` of type CUDA synchronises after every call inside the timed statement. ``repeats`` is
    the number of measured blocks (each block runs ``fn`` the same number of times).

    ``clock="wall"`` (default) times wall-clock time; ``clock="thread"`` times the CPU time of the
    calling thread (``time.thread_time``), which leaves out the time the thread waits while other
    processes hold the core: on a shared machine it is the less noisy estimate of single-threaded CPU
    latency (equal to wall time on an idle machine with ``num_threads=1``; meaningless with more
    threads or on CUDA, where it is refused).
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    if clock == "thread" and (num_threads != 1 or (device is not None and torch.device(device).type != "cpu")):
        raise ValueError(f"clock='thread' needs num_threads=1 on the CPU, got num_threads={num_threads}, device={device}")
    sync = torch.device(device).type == "cuda" if device is not None else False

    def stmt() -> None:
        fn()
        if sync:
            torch.cuda.synchronize()

    for _ in range(warmup):
        stmt()
    timer = time.thread_time if clock == "thread" else time.perf_counter
    m = Timer(stmt="stmt()", globals={"stmt": stmt}, num_threads=num_threads, timer=timer).blocked_autorange(
        min_run_time=min_run_time
    )
    return {"median_ms": m.median * 1e3, "iqr_ms": m.iqr * 1e3, "repeats": len(m.times)}


def _obs_dim(model: nn.Module) -> int:
    obs_dim = getattr(model, "obs_dim", None)
    if obs_dim is None:
        obs_dim = next(m for m in model.encoder.modules() if isinstance(m, nn.Linear)).in_features
    return int(obs_dim)


@torch.no_grad()
def tdmpc_latency(
    model: nn.Module,
    planner: Any,
    num_threads: int = 1,
    min_run_time: float = 1.0,
    seed: int = 0,
    clock: str = "wall",
) -> dict[str, dict[str, float]]:
    """Latency of one policy action and one planned action for a batch-1 observation.

    ``planner`` is an ``MPPIPlanner`` over ``model`` (its warm start is used as in an episode; it is
    reset first). The model is put in eval mode. Returns ``{"policy": {...}, "plan": {...}}``.
    Planning draws from the global torch RNG: save and restore it around this call where that matters.
    """
    model.eval()
    param = next(model.parameters())
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(1, _obs_dim(model), generator=gen).to(param.device, param.dtype)
    planner.reset()

    def policy_action() -> torch.Tensor:
        return model.pi(model.encode(obs))[0]

    def planned_action() -> torch.Tensor:
        return planner.plan(model.encode(obs), eval_mode=True)

    kw = {"num_threads": num_threads, "min_run_time": min_run_time, "device": param.device, "clock": clock}
    return {"policy": measure_latency(policy_action, **kw), "plan": measure_latency(planned_action, **kw)}
