"""TD-MPC2 world model: encoder, latent dynamics, reward head, Q-ensemble and policy prior.

All five components are plain ``nn.Sequential`` MLPs (the Q-ensemble a :class:`QEnsemble` of them) and
are exposed by name through :attr:`WorldModel.components`, the contract ``pruning/`` builds on.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from tdmpc.config import ModelConfig
from tdmpc.layers import Mish, QEnsemble, mlp
from tdmpc.math import SimNorm, TwoHot, gaussian_logprob, squash


def init_weights(module: nn.Module) -> None:
    """TD-MPC2 initialisation: truncated normal (std 0.02) weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class WorldModel(nn.Module):
    """Implicit world model of TD-MPC2 for state observations.

    Components (see :attr:`components`):

    - ``encoder``  obs -> z (SimNorm latent)
    - ``dynamics`` [z, a] -> z' (SimNorm latent)
    - ``reward``   [z, a] -> reward logits (two-hot, symlog space)
    - ``qs``       [z, a] -> Q logits for each of ``num_q`` members
    - ``policy``   z -> (mean, log_std) of a tanh-squashed Gaussian

    ``target_qs`` is an EMA copy of ``qs``; it is not a separate component but must keep exactly the
    shapes of ``qs`` (:meth:`shape_tied`).
    """

    COMPONENTS = ("encoder", "dynamics", "reward", "qs", "policy")

    def __init__(self, obs_dim: int, action_dim: int, cfg: ModelConfig):
        super().__init__()
        self.obs_dim, self.action_dim, self.cfg = obs_dim, action_dim, cfg
        z, a, h = cfg.latent_dim, action_dim, cfg.mlp_dim
        self.encoder = mlp(
            obs_dim, max(cfg.num_enc_layers - 1, 1) * [cfg.enc_dim], z, out_act=SimNorm(cfg.simnorm_dim)
        )
        self.dynamics = mlp(z + a, 2 * [h], z, out_act=SimNorm(cfg.simnorm_dim))
        self.reward = mlp(z + a, 2 * [h], cfg.num_bins)
        self.policy = mlp(z, 2 * [h], 2 * a)
        self.qs = QEnsemble([mlp(z + a, 2 * [h], cfg.num_bins, dropout=cfg.dropout) for _ in range(cfg.num_q)])
        self.apply(init_weights)
        # Reward and Q output layers start at zero (predict 0 for everything), as in TD-MPC2.
        for head in (self.reward, *self.qs.members):
            nn.init.zeros_(head[-1].weight)
        self.target_qs = copy.deepcopy(self.qs).requires_grad_(False)
        self.two_hot = TwoHot(cfg.num_bins, cfg.vmin, cfg.vmax)

    # ----------------------------------------------------------------- pruning contract
    @property
    def components(self) -> dict[str, nn.Module]:
        """The prunable components by name."""
        return {name: getattr(self, name) for name in self.COMPONENTS}

    def shape_tied(self) -> list[tuple[nn.Module, nn.Module]]:
        """Pairs ``(online, copy)`` that must stay identical in shape: the target Q-ensemble."""
        return [(self.qs, self.target_qs)]

    def couplings(self) -> list[dict]:
        """Dimensions shared across components, as plain data (the contract of ``pruning.groups``).

        The latent: written by the last ``Linear`` + ``LayerNorm`` of encoder and dynamics, read by the
        first ``Linear`` of dynamics, reward, policy and every Q-member as columns ``0..latent_dim`` (the
        latent comes first in ``cat([z, a])``), removed in whole SimNorm simplices.
        """
        producers = [m for seq in (self.encoder, self.dynamics) for m in (seq[-3], seq[-2])]  # Linear, LayerNorm
        readers = [self.dynamics[0], self.reward[0], self.policy[0], *(q[0] for q in self.qs.members)]
        return [{"name": "latent", "size": self.encoder[-3].out_features, "producers": producers,
                 "consumers": [(m, 0) for m in readers], "unit": self.cfg.simnorm_dim}]

    def elementwise_modules(self) -> tuple[type[nn.Module], ...]:
        """Module types of this model that act on each channel independently (the custom Mish)."""
        return (Mish,)

    def widths(self) -> dict[str, list[int]]:
        """Output width of every ``nn.Linear`` per component (Q members listed in order)."""
        out = {}
        for name, comp in self.components.items():
            out[name] = [m.out_features for m in comp.modules() if isinstance(m, nn.Linear)]
        return out

    # ----------------------------------------------------------------- forward pieces
    def train(self, mode: bool = True) -> WorldModel:
        super().train(mode)
        self.target_qs.train(False)
        return self

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder(obs)

    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.dynamics(torch.cat([z, a], dim=-1))

    def reward_logits(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.reward(torch.cat([z, a], dim=-1))

    def pi(self, z: torch.Tensor, eps: torch.Tensor | None = None):
        """Sample from the policy prior: returns ``(mu, pi, log_pi, log_std)`` (squashed).

        ``eps`` (shape of ``mu``) is the standard-normal draw of the sample; ``None`` draws it from the
        global torch RNG (passing it in replays a sample exactly, e.g. to check an exported planner).
        """
        mu, log_std = self.policy(z).chunk(2, dim=-1)
        lo, hi = self.cfg.log_std_min, self.cfg.log_std_max
        log_std = lo + 0.5 * (hi - lo) * (torch.tanh(log_std) + 1)
        eps = torch.randn_like(mu) if eps is None else eps
        log_pi = gaussian_logprob(eps, log_std)
        pi = mu + eps * log_std.exp()
        mu, pi, log_pi = squash(mu, pi, log_pi)
        return mu, pi, log_pi, log_std

    def Q(self, z: torch.Tensor, a: torch.Tensor, return_type: str = "min", target: bool = False,
          detach: bool = False, members: list[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Q-values of ``(z, a)``.

        ``return_type='all'`` returns the logits of every member ``(num_q, ..., num_bins)``; ``'min'`` and
        ``'avg'`` decode two randomly chosen members and return their min / mean ``(..., 1)``.
        ``members`` gives those two members instead of drawing them (ignored with ``'all'``): a list, or an
        int64 tensor ``(2,)`` (read without a host sync: :meth:`QEnsemble.forward_indexed`).
        """
        if return_type not in ("all", "min", "avg"):
            raise ValueError(f"return_type must be all|min|avg, got {return_type!r}")
        za = torch.cat([z, a], dim=-1)
        net = self.target_qs if target else self.qs
        if return_type == "all":
            return net(za, detach=detach)
        if isinstance(members, torch.Tensor):
            q = self.two_hot.decode(net.forward_indexed(za, members, detach=detach))
        else:  # two random members, drawn on the CPU generator (no device sync), evaluated alone
            idx = torch.randperm(len(net))[:2].tolist() if members is None else list(members)
            q = self.two_hot.decode(net(za, detach=detach, members=idx))
        q1, q2 = q[0], q[-1]  # a one-member ensemble uses its single member twice
        return torch.min(q1, q2) if return_type == "min" else (q1 + q2) / 2

    @torch.no_grad()
    def soft_update_target(self, tau: float) -> None:
        """EMA ``target <- (1 - tau) * target + tau * online`` for the Q-ensemble."""
        online = list(self.qs.parameters())
        target = list(self.target_qs.parameters())
        torch._foreach_lerp_(target, online, tau)
