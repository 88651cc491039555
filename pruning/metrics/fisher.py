r"""``fisher``: empirical Fisher information of a multiplicative gate on each channel.

.. math::  x_{c,t} = F_{c,t} = \frac1S \sum_{i=1}^{S} \Big(\frac{\partial \ell_i}{\partial m_c}\Big)^2

where :math:`\partial\ell_i/\partial m_c` is the derivative of sample :math:`i`'s loss with respect to a
gate :math:`m_c = 1` on channel :math:`c`, summed over every read of the channel in the update
(:mod:`pruning.gates`: activation × output-gradient at every consumer; for a coupled dimension every
component that reads it; in TD-MPC all horizon steps and both losses of the update). Theis et al. 2018
("Faster gaze prediction with dense networks and Fisher pruning") and Liu et al. 2021 ("Group Fisher
Pruning for Practical Network Compression"): :math:`\frac12 F_c` estimates the loss increase of removing
the channel to second order, with the Fisher as the Hessian. Smoothed over tracked updates like every
tracked metric (EMA / cumulative).
"""

from __future__ import annotations

import torch

from pruning.metrics.base import Evidence, SmoothedMetric
from pruning.metrics.registry import register


@register
class Fisher(SmoothedMetric):
    name = "fisher"
    needs_gates = True

    def signal(self, ev: Evidence) -> torch.Tensor | None:
        return ev.gate_sq_mean
