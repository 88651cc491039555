"""The cost of a TD-MPC agent's actions: FLOPs of a planned / policy action and their latency.

For a TD-MPC world model (duck-typed: ``encoder``, ``dynamics``, ``reward``, ``qs`` with ``.members``,
``policy``):

- one **policy action** (``TDMPC.act`` with ``planner.mpc=False``): ``F_enc(1) + F_pi(1)``;
- one **planned action** (``TDMPC.act`` = encoder + ``MPPIPlanner.plan`` for one observation), with
  horizon ``H``, ``I`` iterations, ``N`` samples, ``P = num_pi_trajs`` policy trajectories,
  ``n = N + P`` and ``q = min(2, num_q)`` Q-members decoded for the terminal value:

      F_plan = F_enc(1)
             + [P > 0] · (H · F_pi(P) + (H - 1) · F_dyn(P))                 policy-prior rollouts
             + I · (H · (F_rew(n) + F_dyn(n)) + F_pi(n) + q · F_Q1(n))      estimate_value per iteration

  where ``F_m(B)`` = :func:`pruning.measure.mlp_flops` and ``F_Q1`` is one Q-member (all members share their
  widths). :func:`plan_calls` is the one place that mirrors the planner's loop; :func:`plan_rows` turns it
  into the rows per ``nn.Linear`` that a FLOPs budget (:class:`pruning.cost.LinearCost`) needs. Both are
  checked against ``torch.utils.flop_counter`` on real calls (``tests/test_measure.py``).

**Latency** (:func:`tdmpc_latency`): :func:`pruning.measure.measure_latency` of a batch-1 policy action and
planned action.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from pruning.measure import measure_latency, mlp_flops

#: Components of a TD-MPC world model.
TDMPC_COMPONENTS = ("encoder", "dynamics", "reward", "qs", "policy")


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
    reset first). The model is put in eval mode; both run without autograd, as an acting agent does. Returns
    ``{"policy": {...}, "plan": {...}}``.
    Planning draws from the global torch RNG: save and restore it around this call where that matters.
    """
    model.eval()
    param = next(model.parameters())
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(1, _obs_dim(model), generator=gen).to(param.device, param.dtype)
    planner.reset()

    # No autograd graph is recorded, as when acting (TDMPC.act): with gradients on, the policy action took
    # ~40 % longer (the graph, and Mish's autograd path).
    @torch.no_grad()
    def policy_action() -> torch.Tensor:
        return model.pi(model.encode(obs))[0]

    @torch.no_grad()
    def planned_action() -> torch.Tensor:
        return planner.plan(model.encode(obs), eval_mode=True)

    kw = {"num_threads": num_threads, "min_run_time": min_run_time, "device": param.device, "clock": clock}
    return {"policy": measure_latency(policy_action, **kw), "plan": measure_latency(planned_action, **kw)}
