r"""Weight-magnitude baselines (computed on demand from the current weights) and ``random``.

- ``l1`` / ``l2``: norm of the weights that **produce** the channel: its row of ``Linear_k`` and its bias
  (for a coupled dimension such as the TD-MPC latent, the rows and biases of every producing
  ``Linear``: the last layers of encoder and dynamics). This is the filter norm of Li et al. 2017
  ("Pruning Filters for Efficient ConvNets"), the field's magnitude baseline; Torch-Pruning's
  ``GroupMagnitudeImportance`` is its group variant.
- ``l1_group`` / ``l2_group``: norm over the channel's whole slice (producing row, the following
  LayerNorm's γ and β, the consuming columns). LayerNorm gains (≈ 1 at initialisation) dominate this
  sum, which is why it is not the default baseline.
- ``random``: :math:`U(0, 1)` per channel drawn once from ``seed``, kept and sliced after pruning.

Only trainable slices count (the target Q-ensemble, a tied copy, is ignored).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from pruning.importance import ChannelLayout, random_scores, weight_sums
from pruning.metrics.base import ImportanceMetric
from pruning.metrics.registry import register


class _Norm(ImportanceMetric):
    producing_only = True
    p = 2

    def scores(self, smoothing: str) -> torch.Tensor:
        layout = self.layout.producing() if self.producing_only else self.layout
        if self.p == 1:
            return weight_sums(layout, ["abs"])["abs"]
        return weight_sums(layout, ["t2"])["t2"].sqrt()


@register
class L1(_Norm):
    name, p = "l1", 1


@register
class L2(_Norm):
    name, p = "l2", 2


@register
class L1Group(_Norm):
    name, p, producing_only = "l1_group", 1, False


@register
class L2Group(_Norm):
    name, p, producing_only = "l2_group", 2, False


@register
class Random(ImportanceMetric):
    name = "random"

    def __init__(self, layout: ChannelLayout, cfg, device: torch.device):
        super().__init__(layout, cfg, device)
        self.values = random_scores(layout.num_channels, cfg.seed).to(device)

    def scores(self, smoothing: str) -> torch.Tensor:
        return self.values.clone()

    def state_dict(self) -> dict[str, Any]:
        return {"values": self.values.cpu().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.values = state["values"].to(dtype=torch.float64, device=self.device).clone()

    def select(self, index: torch.Tensor, layout: ChannelLayout) -> None:
        super().select(index, layout)
        self.values = self.values.index_select(0, index)
