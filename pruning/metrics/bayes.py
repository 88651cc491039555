r"""``bayes`` (Bayesian Uncertainty): a Gaussian posterior over each channel's per-step gate saliency.

Signal: the first-order saliency of removing the channel at tracked update :math:`t`,

.. math::  s_{c,t} = \Big|\frac{\partial L_t}{\partial m_c}\Big| = \Big|\frac1S\sum_i
           \frac{\partial \ell_i}{\partial m_c}\Big|

(the mini-batch gate derivative of :mod:`pruning.gates`). It is the evidence "how sensitive is the loss
to this channel *now*"; no other metric uses it (``fisher`` averages the *squared per-sample*
derivatives, :math:`s^2 \le F` by Cauchy-Schwarz, with equality only when all samples agree; ``taylor``
uses the parameter form over the whole slice).

Model: :math:`s_{c,t} \sim \mathcal N(\mu_c, \sigma_c^2)`, updated every tracked step. Under a flat prior
the posterior is centred on the maximum-likelihood fit: ``smoothing=cumulative``: Welford's running mean
and population variance over all steps; ``smoothing=ema``: the same moments under the EMA weights
(recent steps weigh more). Score :math:`\mu_c + \kappa\sigma_c` (``bayes_kappa``): a channel ranks high
when it is sensitive on average over its history *and* when its sensitivity fluctuates (it matters on
some batches), i.e. uncertain channels are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from pruning.importance import ChannelLayout, bias_correction
from pruning.metrics.base import Evidence, SmoothedMetric
from pruning.metrics.registry import register


@register
class Bayes(SmoothedMetric):
    name = "bayes"
    needs_gates = True

    def __init__(self, layout: ChannelLayout, cfg, device: torch.device):
        super().__init__(layout, cfg, device)
        z = dict(dtype=torch.float64, device=device)
        self.ema_sq = torch.zeros(layout.num_channels, **z)  # EMA of s^2
        self.mean = torch.zeros(layout.num_channels, **z)  # Welford running mean
        self.m2 = torch.zeros(layout.num_channels, **z)  # Welford sum of squared deviations

    def signal(self, ev: Evidence) -> torch.Tensor | None:
        d = ev.gate_mean
        return None if d is None else d.abs()

    def observe(self, ev: Evidence) -> None:
        s = self.signal(ev)
        if s is None:
            return
        self.ema_sq.lerp_(s * s, 1.0 - self.cfg.beta)
        delta = s - self.mean  # Welford (1962)
        self.mean.add_(delta / (self.n + 1))
        self.m2.add_(delta * (s - self.mean))
        self.ema.lerp_(s, 1.0 - self.cfg.beta)
        self.cum.add_(s)
        self.n += 1

    def moments(self, smoothing: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and std of the saliency (zeros before the first step)."""
        if self.n == 0:
            return torch.zeros_like(self.mean), torch.zeros_like(self.mean)
        if smoothing == "cumulative":
            return self.mean.clone(), (self.m2 / self.n).clamp_min(0).sqrt()
        corr = bias_correction(self.cfg.beta, self.n)
        mean = self.ema / corr
        return mean, (self.ema_sq / corr - mean.square()).clamp_min(0).sqrt()

    def scores(self, smoothing: str) -> torch.Tensor:
        mean, std = self.moments(smoothing)
        return mean + self.cfg.bayes_kappa * std

    def snr(self, smoothing: str) -> torch.Tensor:
        """``mu / sigma`` per channel (``inf`` where sigma = 0 < mu, 0 where mu = 0)."""
        mean, std = self.moments(smoothing)
        return torch.where(mean == 0, torch.zeros_like(mean), mean / std)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "ema_sq": self.ema_sq.cpu().clone(), "mean": self.mean.cpu().clone(),
                "m2": self.m2.cpu().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        to = dict(dtype=torch.float64, device=self.device)
        self.ema_sq, self.mean, self.m2 = (state[k].to(**to).clone() for k in ("ema_sq", "mean", "m2"))

    def select(self, index: torch.Tensor, layout: ChannelLayout) -> None:
        super().select(index, layout)
        self.ema_sq, self.mean, self.m2 = (t.index_select(0, index) for t in (self.ema_sq, self.mean, self.m2))
