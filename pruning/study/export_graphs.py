"""The exported graphs: ``nn.Module`` wrappers of a TD-MPC world model that run the policy prior and one
MPPI planning step with every random draw as an argument (see :mod:`pruning.study.export`).

The planner graph is the planner's own :func:`tdmpc.planner.plan_step` (also what ``compile=true`` runs), so
the exported planner cannot drift from the PyTorch one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from tdmpc.planner import PlanNoise, plan_step


class PolicyGraph(nn.Module):
    """``obs (B, obs_dim) -> action (B, A)``: the policy prior's deterministic (mean) action."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        z = self.model.encode(obs)
        eps = obs.new_zeros(obs.shape[0], self.model.action_dim)  # unused by the mean, removed by the exporter
        return self.model.pi(z, eps=eps)[0]


class PlanGraph(nn.Module):
    """One evaluation-mode MPPI action with the random draws as inputs: :func:`tdmpc.planner.plan_step` (the
    function the compiled planner runs, and, given the same noise, what ``MPPIPlanner.plan`` computes) after
    the encoder. The warm start is always an input (zeros = none); the two Q-members of each iteration's
    terminal value are a tensor index into the stacked member weights."""

    def __init__(self, model: nn.Module, planner_cfg: Any, discount: float):
        super().__init__()
        self.model, self.cfg, self.discount = model, planner_cfg, float(discount)
        self.action_dim = int(model.action_dim)

    def forward(self, obs, prev_mean, sample_eps, terminal_eps, q_members, gumbel_u, pi_eps=None):
        if pi_eps is None:  # no policy-prior trajectories (num_pi_trajs = 0)
            pi_eps = prev_mean.new_zeros(self.cfg.horizon, 0, self.action_dim)
        noise = PlanNoise(pi_eps=pi_eps, sample_eps=sample_eps, terminal_eps=terminal_eps, q_members=q_members,
                          gumbel_u=gumbel_u, action_eps=prev_mean.new_zeros(self.action_dim))
        return plan_step(self.model, self.cfg, self.discount, self.model.encode(obs), prev_mean, noise, True)


# ------------------------------------------------------------------------------------------ loading
