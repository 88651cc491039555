"""MPPI planning in the latent space of the world model (TD-MPC2's ``plan``).

Vectorised: all ``num_samples + num_pi_trajs`` trajectories are rolled out as one batch per horizon
step, and the Q-ensemble is evaluated in one batched pass. The only Python loops are over the planning
iterations and the horizon, which are sequential by nature.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from tdmpc.config import PlannerConfig
from tdmpc.world_model import WorldModel


@dataclass
class PlanNoise:
    """Every random draw of one :meth:`MPPIPlanner.plan` call, passed in to replay a plan exactly.

    With ``H`` = horizon, ``P`` = num_pi_trajs, ``N`` = num_samples, ``n = N + P``, ``I`` = iterations,
    ``E`` = num_elites and ``A`` = action_dim:

    - ``pi_eps (H, P, A)``: standard normal, the policy-prior rollouts' samples (step ``t`` uses ``[t]``);
    - ``sample_eps (I, H, N, A)``: standard normal, the sampled trajectories of each iteration;
    - ``terminal_eps (I, n, A)``: standard normal, the terminal policy action of ``estimate_value``;
    - ``q_members (I, 2)`` int64: the two Q-members averaged for the terminal value;
    - ``gumbel_u (E,)``: uniform in [0, 1), the Gumbel-max choice of the elite trajectory;
    - ``action_eps (A,)``: standard normal, the exploration noise (used only with ``eval_mode=False``).

    Without a ``PlanNoise`` the planner draws the same quantities from the global torch RNG, at the
    same points, as it always did.
    """

    pi_eps: torch.Tensor
    sample_eps: torch.Tensor
    terminal_eps: torch.Tensor
    q_members: torch.Tensor
    gumbel_u: torch.Tensor
    action_eps: torch.Tensor

    @staticmethod
    def draw(cfg: PlannerConfig, action_dim: int, num_q: int, generator: torch.Generator | None = None,
             device: torch.device | str = "cpu") -> PlanNoise:
        """Fresh noise of the shapes above (from ``generator``, or the global torch RNG)."""
        H, P, N, iters, A = cfg.horizon, cfg.num_pi_trajs, cfg.num_samples, cfg.iterations, action_dim
        g = {"generator": generator}
        members = torch.stack([torch.randperm(num_q, **g)[:2] for _ in range(iters)])
        if num_q == 1:  # a one-member ensemble uses its single member twice
            members = members.expand(iters, 2)
        return PlanNoise(
            pi_eps=torch.randn(H, P, A, **g).to(device),
            sample_eps=torch.randn(iters, H, N, A, **g).to(device),
            terminal_eps=torch.randn(iters, N + P, A, **g).to(device),
            q_members=members.contiguous().to(device),
            gumbel_u=torch.rand(cfg.num_elites, **g).to(device),
            action_eps=torch.randn(A, **g).to(device),
        )


def model_return(model: WorldModel, z: torch.Tensor, actions: torch.Tensor, gamma: float):
    """Discounted model reward of ``actions (H, n, A)`` from latents ``z (n, Z)``: ``(G (n, 1), terminal
    latent, gamma**H)``. The one rollout, shared by :func:`estimate_value` (the eager, compiled and exported
    planner)."""
    G = torch.zeros(z.shape[0], 1, device=z.device)
    discount = 1.0
    for t in range(actions.shape[0]):
        reward = model.two_hot.decode(model.reward_logits(z, actions[t]))
        z = model.next(z, actions[t])
        G = G + discount * reward
        discount *= gamma
    return G, z, discount


def elite_update(actions: torch.Tensor, value: torch.Tensor, cfg: PlannerConfig):
    """One MPPI refit: the ``num_elites`` best of ``actions (H, n, A)`` by ``value (n,)``, weighted by
    ``softmax(temperature * value)``; returns ``(mean (H, A), std (H, A), score (E,), elite_actions (H, E, A))``.
    The one definition, shared by :meth:`MPPIPlanner.plan` and the exported planner graph."""
    elite_value, elite_idx = torch.topk(value, cfg.num_elites)
    elite_actions = actions[:, elite_idx]  # (H, E, A)
    score = torch.exp(cfg.temperature * (elite_value - elite_value.max()))
    score = score / score.sum()
    w = score.view(1, -1, 1)
    mean = (w * elite_actions).sum(1)
    std = ((w * (elite_actions - mean.unsqueeze(1)).pow(2)).sum(1)).sqrt().clamp(cfg.min_std, cfg.max_std)
    return mean, std, score, elite_actions


def prior_actions(model: WorldModel, z: torch.Tensor, shape: tuple[int, int, int],
                  pi_eps: torch.Tensor | None = None) -> torch.Tensor:
    """``shape = (H, n_pi, A)`` actions of the policy-prior rollouts from ``z (1, Z)``; ``pi_eps`` (that shape)
    replaces the policy's own standard-normal draws (``None``: drawn inline from the global torch RNG)."""
    horizon, n_pi, _ = shape
    if n_pi == 0:
        return z.new_zeros(shape)
    _z, steps = z.expand(n_pi, -1), []
    for t in range(horizon):
        steps.append(model.pi(_z, eps=None if pi_eps is None else pi_eps[t])[1])
        if t < horizon - 1:
            _z = model.next(_z, steps[-1])
    return torch.stack(steps)


def estimate_value(model: WorldModel, z: torch.Tensor, actions: torch.Tensor, discount: float,
                   terminal_eps: torch.Tensor | None = None,
                   q_members: torch.Tensor | list[int] | None = None) -> torch.Tensor:
    """Discounted model return of ``actions (H, N, A)`` from latents ``z (N, Z)`` plus the terminal Q-value: ``(N, 1)``.

    ``terminal_eps`` and ``q_members`` replace the random draws of the terminal action and of the two Q-members
    (see :class:`PlanNoise`); ``None`` draws them. Members given as a tensor are read without a host sync."""
    G, z, gamma_h = model_return(model, z, actions, discount)
    terminal_action = model.pi(z, eps=terminal_eps)[1]
    return G + gamma_h * model.Q(z, terminal_action, return_type="avg", members=q_members)


def plan_step(model: WorldModel, cfg: PlannerConfig, discount: float, z: torch.Tensor, prev_mean: torch.Tensor,
              noise: PlanNoise, eval_mode: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One MPPI action from ``z (1, Z)`` and the warm start ``prev_mean (H, A)`` (zeros: none) with every random
    draw given: ``(action (A,), new mean (H, A))``.

    A pure function of tensors with static shapes and no host sync (the Q-members are a tensor index), so it
    compiles to one graph (:meth:`MPPIPlanner.compile`) and exports (``pruning.study.export_graphs``). Given the
    same noise it computes what :meth:`MPPIPlanner.plan` computes, operation for operation.
    """
    A = prev_mean.shape[-1]
    pi_actions = prior_actions(model, z, (cfg.horizon, cfg.num_pi_trajs, A), noise.pi_eps)
    z_all = z.expand(cfg.num_samples + cfg.num_pi_trajs, -1)
    mean = torch.cat([prev_mean[1:], prev_mean.new_zeros(1, A)])
    std = torch.full_like(mean, cfg.max_std)
    score = elite_actions = None
    for i in range(cfg.iterations):
        sampled = (mean.unsqueeze(1) + std.unsqueeze(1) * noise.sample_eps[i]).clamp(-1, 1)
        actions = torch.cat([pi_actions, sampled], dim=1)  # policy trajectories first, as in plan()
        value = estimate_value(model, z_all, actions, discount, noise.terminal_eps[i], noise.q_members[i])
        mean, std, score, elite_actions = elite_update(actions, value.nan_to_num(0.0).squeeze(-1), cfg)
    gumbel = -torch.log(-torch.log(noise.gumbel_u.clamp_min(1e-20)))
    chosen = torch.argmax(score.log() + gumbel)
    action = elite_actions[0].index_select(0, chosen.view(1))[0]
    if not eval_mode:
        action = action + std[0] * noise.action_eps
    return action.clamp(-1, 1), mean


class MPPIPlanner:
    """Model-predictive path integral control with a policy prior and warm start."""

    def __init__(self, model: WorldModel, cfg: PlannerConfig, action_dim: int, discount: float):
        self.model, self.cfg, self.action_dim, self.discount = model, cfg, action_dim, discount
        self.prev_mean: torch.Tensor | None = None  # (horizon, action_dim), warm start
        self._step: Callable | None = None  # the compiled plan_step, see compile()

    def compile(self, enabled: bool = True) -> None:
        """Plan with ``torch.compile(plan_step)`` (one graph, static shapes) when ``enabled``, else eagerly.

        Compiled planning draws its noise up front (:meth:`PlanNoise.draw`, from the global torch RNG) and
        passes it in, so its actions equal the eager ``plan(noise=...)`` to float tolerance. The eager default
        (``plan(noise=None)``) draws inline, in another order: compiled and eager runs of one seed take
        different random actions. A model whose shapes change (pruning) is recompiled once, at its next plan.
        """
        self._step = torch.compile(plan_step, fullgraph=True, dynamic=False) if enabled else None

    @property
    def compiled(self) -> bool:
        return self._step is not None

    def reset(self) -> None:
        """Forget the warm start (call at the start of each episode)."""
        self.prev_mean = None

    @torch.no_grad()
    def plan(self, z: torch.Tensor, eval_mode: bool = False, noise: PlanNoise | None = None) -> torch.Tensor:
        """One action (A,) for a single latent ``z (1, Z)``.

        ``noise`` (a :class:`PlanNoise`) supplies every random draw instead of the global torch RNG, so
        that a plan can be replayed exactly; ``None`` (the default) draws them.
        """
        cfg, A, H = self.cfg, self.action_dim, self.cfg.horizon
        device = z.device
        if self._step is not None:
            if noise is None:
                noise = PlanNoise.draw(cfg, A, len(self.model.qs), device=device)
            prev = torch.zeros(H, A, device=device) if self.prev_mean is None else self.prev_mean
            action, self.prev_mean = self._step(self.model, cfg, self.discount, z, prev, noise, eval_mode)
            return action
        n_pi = cfg.num_pi_trajs
        pi_actions = prior_actions(self.model, z, (H, n_pi, A), None if noise is None else noise.pi_eps)

        n = cfg.num_samples + n_pi
        z_all = z.expand(n, -1)
        mean = torch.zeros(H, A, device=device)
        std = torch.full((H, A), cfg.max_std, device=device)
        if self.prev_mean is not None:
            mean[:-1] = self.prev_mean[1:]
        actions = torch.empty(H, n, A, device=device)
        if n_pi > 0:
            actions[:, :n_pi] = pi_actions

        for i in range(cfg.iterations):
            if noise is None:
                eps, terminal_eps, members = torch.randn(H, cfg.num_samples, A, device=device), None, None
            else:
                eps, terminal_eps, members = noise.sample_eps[i], noise.terminal_eps[i], noise.q_members[i].tolist()
            actions[:, n_pi:] = (mean.unsqueeze(1) + std.unsqueeze(1) * eps).clamp(-1, 1)
            value = estimate_value(self.model, z_all, actions, self.discount, terminal_eps, members)
            value = value.nan_to_num(0.0).squeeze(-1)  # (n,)
            mean, std, score, elite_actions = elite_update(actions, value, cfg)

        # Pick one elite trajectory in proportion to its score (Gumbel-max sampling).
        u = torch.rand_like(score) if noise is None else noise.gumbel_u
        gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))
        chosen = torch.argmax(score.log() + gumbel)
        traj = elite_actions[:, chosen]
        action = traj[0]
        if not eval_mode:
            action = action + std[0] * (torch.randn(A, device=device) if noise is None else noise.action_eps)
        self.prev_mean = mean
        return action.clamp(-1, 1)
