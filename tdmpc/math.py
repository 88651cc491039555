"""Numerical helpers of TD-MPC2: symlog, discrete two-hot regression, SimNorm, squashed Gaussians.

Rewards and values are regressed as a categorical distribution over ``num_bins`` bins evenly spaced
in symlog space on ``[vmin, vmax]`` (Hafner et al., DreamerV3; Hansen et al., TD-MPC2). A scalar ``x``
maps to a "two-hot" vector that puts mass on the two bins around ``symlog(x)`` so that the
expectation of the bins under that vector is exactly ``symlog(x)`` (inside the range).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`symlog`: ``sign(x) * (exp(|x|) - 1)``."""
    return torch.sign(x) * torch.expm1(x.abs())


class TwoHot:
    """Two-hot encoding in symlog space with ``num_bins`` bins on ``[vmin, vmax]``."""

    def __init__(self, num_bins: int = 101, vmin: float = -10.0, vmax: float = 10.0):
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}")
        self.num_bins = num_bins
        self.vmin = float(vmin)
        self.vmax = float(vmax)
        self.bin_size = (self.vmax - self.vmin) / (num_bins - 1)
        self._bins: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def bins(self, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if torch.compiler.is_compiling():
            # Inside a compiled graph the bins are one constant op: reading the eager cache would make dynamo
            # guard on the dict's keys, and the first call (which fills the cache) would compile the whole
            # planner or update a second time at its next call (seen with TORCH_LOGS=recompiles).
            return torch.linspace(self.vmin, self.vmax, self.num_bins, device=device, dtype=dtype)
        key = (device, dtype)
        if key not in self._bins:
            self._bins[key] = torch.linspace(self.vmin, self.vmax, self.num_bins, device=device, dtype=dtype)
        return self._bins[key]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Scalars ``x`` of shape ``(..., 1)`` -> two-hot targets of shape ``(..., num_bins)``."""
        x = symlog(x).clamp(self.vmin, self.vmax).squeeze(-1)
        pos = (x - self.vmin) / self.bin_size
        idx = pos.floor().clamp(max=self.num_bins - 1)
        offset = (pos - idx).unsqueeze(-1)
        idx = idx.long().unsqueeze(-1)
        out = torch.zeros(*x.shape, self.num_bins, device=x.device, dtype=x.dtype)
        out.scatter_(-1, idx, 1.0 - offset)
        # At the upper edge offset == 0, so the (idx + 1) % num_bins wrap adds zero mass.
        out.scatter_add_(-1, (idx + 1) % self.num_bins, offset)
        return out

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits ``(..., num_bins)`` -> scalars ``(..., 1)``: symexp of the expected bin."""
        probs = F.softmax(logits, dim=-1)
        x = (probs * self.bins(logits.device, logits.dtype)).sum(-1, keepdim=True)
        return symexp(x)

    def soft_ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy between predicted logits ``(..., num_bins)`` and two-hot(target ``(..., 1)``)."""
        return -(self.encode(target) * F.log_softmax(logits, dim=-1)).sum(-1, keepdim=True)


class SimNorm(torch.nn.Module):
    """Simplicial normalisation: softmax over consecutive groups of ``dim`` features.

    The latent of size ``L`` is viewed as ``L / dim`` simplices. Structured pruning must therefore remove
    latent features in whole groups of ``dim`` so that the grouping of the remaining features is unchanged.
    """

    def __init__(self, dim: int = 8):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(*shape[:-1], -1, self.dim)
        return F.softmax(x, dim=-1).reshape(shape)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def gaussian_logprob(eps: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Log-density of ``mu + eps * std`` under ``N(mu, std)``, summed over the last dim (keepdim)."""
    residual = (-0.5 * eps.pow(2) - log_std).sum(-1, keepdim=True)
    return residual - 0.5 * math.log(2 * math.pi) * eps.size(-1)


def squash(mu: torch.Tensor, pi: torch.Tensor, log_pi: torch.Tensor):
    """tanh-squash the mean and the sample, with the change-of-variables correction of the log-prob."""
    mu = torch.tanh(mu)
    pi = torch.tanh(pi)
    log_pi = log_pi - torch.log(F.relu(1 - pi.pow(2)) + 1e-6).sum(-1, keepdim=True)
    return mu, pi, log_pi
