r"""Metrics of the channel's parameter gradient, read from ``.grad`` after the update (after clipping).

Sums run over the channel's parameter slice :math:`S_c` (producing row and bias, following LayerNorm
element, consuming columns; trainable slices only), :math:`g = \nabla_\theta L_t` at tracked update
:math:`t`. Each metric keeps the cumulative sum and the bias-corrected EMA of its per-step signal
(:class:`~pruning.metrics.base.SmoothedMetric`).
"""

from __future__ import annotations

import torch

from pruning.metrics.base import Evidence, SmoothedMetric
from pruning.metrics.registry import register


@register
class GradAcc(SmoothedMetric):
    r"""Gradient Accumulation: :math:`x_{c,t} = \lVert g_{S_c,t}\rVert_2` accumulated over training.

    The magnitude (not the signed gradient) is accumulated, so that a channel the loss keeps pulling on
    counts even when the direction of the pull changes from step to step (signed sums cancel for every
    parameter near a minimum). Variant ``grad_acc_variant=taylor_abs``: :math:`|\sum_{S_c}\theta g|`.
    """

    name = "grad_acc"

    def grad_stats(self) -> set[str]:
        return {"g2" if self.cfg.grad_acc_variant == "l2" else "tg"}

    def signal(self, ev: Evidence) -> torch.Tensor:
        if self.cfg.grad_acc_variant == "l2":
            return ev.grad_sum("g2").sqrt()
        return ev.grad_sum("tg").abs()


@register
class GradSq(SmoothedMetric):
    r"""Squared mini-batch gradient :math:`x = \sum_{S_c} g^2` (variant ``grad_sq_variant=obd``:
    :math:`\sum_{S_c}\theta^2 g^2`, OBD with the squared gradient as curvature).

    This is the squared gradient of the *mean* mini-batch loss. It is not Fisher information, which is
    an expectation over per-sample gradients (see ``fisher``); it was this suite's ``fisher`` before.
    """

    name = "grad_sq"

    def grad_stats(self) -> set[str]:
        return {"g2" if self.cfg.grad_sq_variant == "diag" else "t2g2"}

    def signal(self, ev: Evidence) -> torch.Tensor:
        return ev.grad_sum("g2" if self.cfg.grad_sq_variant == "diag" else "t2g2")


@register
class Taylor(SmoothedMetric):
    r"""Group Taylor importance (Molchanov et al., CVPR 2019), parameter form:
    :math:`x = (\sum_{S_c}\theta g)^2`, the squared first-order change of the mini-batch loss when the
    whole slice is set to zero."""

    name = "taylor"

    def grad_stats(self) -> set[str]:
        return {"tg"}

    def signal(self, ev: Evidence) -> torch.Tensor:
        return ev.grad_sum("tg").square()
