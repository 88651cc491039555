"""MPPI planning in the latent space of the world model (TD-MPC2's ``plan``).

Vectorised: all ``num_samples + num_pi_trajs`` trajectories are rolled out as one batch per horizon
step, and the Q-ensemble is evaluated in one batched pass. The only Python loops are over the planning
iterations and the horizon, which are sequential by nature.
"""

from __future__ import annotations

import torch

from tdmpc.config import PlannerConfig
from tdmpc.world_model import WorldModel


class MPPIPlanner:
    """Model-predictive path integral control with a policy prior and warm start."""

    def __init__(self, model: WorldModel, cfg: PlannerConfig, action_dim: int, discount: float):
        self.model, self.cfg, self.action_dim, self.discount = model, cfg, action_dim, discount
        self.prev_mean: torch.Tensor | None = None  # (horizon, action_dim), warm start

    def reset(self) -> None:
        """Forget the warm start (call at the start of each episode)."""
        self.prev_mean = None

    @torch.no_grad()
    def estimate_value(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Discounted model return of ``actions (H, N, A)`` from latents ``z (N, Z)`` plus terminal Q."""
        G = torch.zeros(z.shape[0], 1, device=z.device)
        discount = 1.0
        for t in range(actions.shape[0]):
            reward = self.model.two_hot.decode(self.model.reward_logits(z, actions[t]))
            z = self.model.next(z, actions[t])
            G = G + discount * reward
            discount *= self.discount
        terminal_action = self.model.pi(z)[1]
        return G + discount * self.model.Q(z, terminal_action, return_type="avg")

    @torch.no_grad()
    def plan(self, z: torch.Tensor, eval_mode: bool = False) -> torch.Tensor:
        """One action (A,) for a single latent ``z (1, Z)``."""
        cfg, A, H = self.cfg, self.action_dim, self.cfg.horizon
        device = z.device
        # Policy-prior trajectories.
        n_pi = cfg.num_pi_trajs
        pi_actions = torch.empty(H, n_pi, A, device=device)
        if n_pi > 0:
            _z = z.expand(n_pi, -1)
            for t in range(H - 1):
                pi_actions[t] = self.model.pi(_z)[1]
                _z = self.model.next(_z, pi_actions[t])
            pi_actions[-1] = self.model.pi(_z)[1]

        n = cfg.num_samples + n_pi
        z_all = z.expand(n, -1)
        mean = torch.zeros(H, A, device=device)
        std = torch.full((H, A), cfg.max_std, device=device)
        if self.prev_mean is not None:
            mean[:-1] = self.prev_mean[1:]
        actions = torch.empty(H, n, A, device=device)
        if n_pi > 0:
            actions[:, :n_pi] = pi_actions

        for _ in range(cfg.iterations):
            noise = torch.randn(H, cfg.num_samples, A, device=device)
            actions[:, n_pi:] = (mean.unsqueeze(1) + std.unsqueeze(1) * noise).clamp(-1, 1)
            value = self.estimate_value(z_all, actions).nan_to_num(0.0).squeeze(-1)  # (n,)
            elite_value, elite_idx = torch.topk(value, cfg.num_elites)
            elite_actions = actions[:, elite_idx]  # (H, E, A)
            score = torch.exp(cfg.temperature * (elite_value - elite_value.max()))
            score = score / score.sum()
            w = score.view(1, -1, 1)
            mean = (w * elite_actions).sum(1)
            std = ((w * (elite_actions - mean.unsqueeze(1)).pow(2)).sum(1)).sqrt().clamp(cfg.min_std, cfg.max_std)

        # Pick one elite trajectory in proportion to its score (Gumbel-max sampling).
        gumbel = -torch.log(-torch.log(torch.rand_like(score).clamp_min(1e-20)))
        chosen = torch.argmax(score.log() + gumbel)
        traj = elite_actions[:, chosen]
        action = traj[0]
        if not eval_mode:
            action = action + std[0] * torch.randn(A, device=device)
        self.prev_mean = mean
        return action.clamp(-1, 1)
