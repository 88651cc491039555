"""The exported graphs: ``nn.Module`` wrappers of a TD-MPC world model that run the policy prior and one
MPPI planning step with every random draw as an argument (see :mod:`pruning.study.export`).

They reuse the planner's own arithmetic (:func:`tdmpc.planner.model_return`,
:func:`tdmpc.planner.elite_update`), so the exported planner cannot drift from the PyTorch one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from tdmpc.planner import elite_update, model_return


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
    """One evaluation-mode MPPI action with the random draws as inputs (see the module docstring).

    Mirrors :meth:`tdmpc.planner.MPPIPlanner.plan` / ``estimate_value`` step by step; two differences
    make it exportable and neither changes a number: the warm start is always an input (zeros = none),
    and the two Q-members of the terminal value are picked by a tensor index into the stacked member
    weights (the PyTorch planner stacks the chosen members' weights the same way).
    """

    def __init__(self, model: nn.Module, planner_cfg: Any, discount: float):
        super().__init__()
        self.model, self.cfg, self.discount = model, planner_cfg, float(discount)
        self.action_dim = int(model.action_dim)
        self.q_layers: list[nn.Module] = []  # the first member's layers: types and LayerNorm eps
        for k, layers in enumerate(zip(*model.qs.members)):
            self.q_layers.append(layers[0])
            if isinstance(layers[0], (nn.Linear, nn.LayerNorm)):
                self.register_buffer(f"q_weight{k}", torch.stack([m.weight.detach() for m in layers]))
                self.register_buffer(f"q_bias{k}", torch.stack([m.bias.detach() for m in layers]))

    def q_avg(self, z: torch.Tensor, a: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
        """Mean of the decoded Q-values of the two ``members (2,)`` at ``(z, a)``: ``(n, 1)``."""
        za = torch.cat([z, a], dim=-1)
        h = za.unsqueeze(0).expand(2, -1, -1)
        for k, first in enumerate(self.q_layers):
            if isinstance(first, nn.Linear):
                w = getattr(self, f"q_weight{k}").index_select(0, members)  # (2, out, in)
                b = getattr(self, f"q_bias{k}").index_select(0, members).unsqueeze(1)
                h = torch.baddbmm(b, h, w.transpose(1, 2))
            elif isinstance(first, nn.LayerNorm):
                w = getattr(self, f"q_weight{k}").index_select(0, members).unsqueeze(1)
                b = getattr(self, f"q_bias{k}").index_select(0, members).unsqueeze(1)
                h = nn.functional.layer_norm(h, first.normalized_shape, eps=first.eps) * w + b
            else:  # Mish, Dropout (eval: identity)
                h = first(h)
        q = self.model.two_hot.decode(h)
        return (q[0] + q[-1]) / 2

    def value(self, z: torch.Tensor, actions: torch.Tensor, terminal_eps: torch.Tensor,
              members: torch.Tensor) -> torch.Tensor:
        """``MPPIPlanner.estimate_value`` of ``actions (H, n, A)`` from ``z (n, Z)``: ``(n, 1)``."""
        G, z, discount = model_return(self.model, z, actions, self.discount)
        terminal_action = self.model.pi(z, eps=terminal_eps)[1]
        return G + discount * self.q_avg(z, terminal_action, members)

    def prior_actions(self, z: torch.Tensor, pi_eps: torch.Tensor | None) -> torch.Tensor:
        """``(H, P, A)`` actions of the policy-prior rollouts from ``z (1, Z)``."""
        H, n_pi = self.cfg.horizon, self.cfg.num_pi_trajs
        if n_pi == 0:
            return torch.zeros(H, 0, self.action_dim)
        _z, steps = z.expand(n_pi, -1), []
        for t in range(H):
            steps.append(self.model.pi(_z, eps=pi_eps[t])[1])
            if t < H - 1:
                _z = self.model.next(_z, steps[-1])
        return torch.stack(steps)

    def forward(self, obs, prev_mean, sample_eps, terminal_eps, q_members, gumbel_u, pi_eps=None):
        cfg = self.cfg
        z = self.model.encode(obs)
        pi_actions = self.prior_actions(z, pi_eps)
        z_all = z.expand(cfg.num_samples + cfg.num_pi_trajs, -1)
        mean = torch.cat([prev_mean[1:], torch.zeros(1, self.action_dim)])
        std = torch.full((cfg.horizon, self.action_dim), float(cfg.max_std))
        for i in range(cfg.iterations):
            sampled = (mean.unsqueeze(1) + std.unsqueeze(1) * sample_eps[i]).clamp(-1, 1)
            actions = torch.cat([pi_actions, sampled], dim=1)  # policy trajectories first, as in plan()
            value = self.value(z_all, actions, terminal_eps[i], q_members[i]).nan_to_num(0.0).squeeze(-1)
            mean, std, score, elite_actions = elite_update(actions, value, cfg)
        gumbel = -torch.log(-torch.log(gumbel_u.clamp_min(1e-20)))
        chosen = torch.argmax(score.log() + gumbel)
        action = elite_actions[0].index_select(0, chosen.view(1))[0]
        return action.clamp(-1, 1), mean


# ------------------------------------------------------------------------------------------ loading
