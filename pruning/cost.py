r"""The cost of a model as a function of its groups' widths, for cost budgets (``budget=flops``).

A model's matrix-multiply FLOPs are :math:`\sum_k r_k \cdot 2 \cdot in_k \cdot out_k` over its
``nn.Linear`` s, where :math:`r_k` is the number of rows layer :math:`k` is applied to per unit of work
(e.g. per planned action: :func:`pruning.study.cost_model.plan_rows`). Removing ``w`` channels of a group shrinks
``out`` of every ``Linear`` whose rows the group slices and ``in`` of every ``Linear`` whose columns it
slices, so the cost is exact for hidden groups and for coupled dimensions alike (a latent channel costs in
every component that reads or writes it). :class:`LinearCost` keeps the current widths and updates the
total exactly, removal by removal (the cost is bilinear in neighbouring widths, so a channel's price
depends on what was removed before it).

This module knows nothing of any particular model: the rows are given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch.nn as nn

from pruning.groups import Group


class LinearCost:
    """Exact :math:`\\sum_k r_k\\, 2\\, in_k\\, out_k` of ``rows`` (``nn.Linear`` -> rows), following removals.

    Linears not in ``rows`` (e.g. a target network never used for acting) cost nothing.
    """

    def __init__(self, groups: Sequence[Group], rows: Mapping[nn.Linear, float]):
        self.rows = {lin: float(r) for lin, r in rows.items() if r}
        self.shape = {lin: [lin.in_features, lin.out_features] for lin in self.rows}
        # group name -> [(linear, 0 = its inputs | 1 = its outputs)]
        self.touches: dict[str, list[tuple[nn.Linear, int]]] = {}
        for g in groups:
            for s in g.slices:
                if s.module in self.rows and s.param_name == "weight":
                    self.touches.setdefault(g.name, []).append((s.module, 1 if s.dim == 0 else 0))
        self.dense = self.total = sum(self._flops(lin) for lin in self.rows)

    def _flops(self, lin: nn.Linear) -> float:
        i, o = self.shape[lin]
        return self.rows[lin] * 2 * i * o

    def price(self, names: Sequence[str], width: int) -> float:
        """Cost that removing ``width`` channels from each group in ``names`` would save now."""
        before = self.total
        saved = self.remove(names, width)
        self.remove(names, -width)
        self.total = before  # exact: undo the float round-off of the two updates
        return saved

    def remove(self, names: Sequence[str], width: int) -> float:
        """Remove ``width`` channels from each group in ``names`` (negative: put back); returns the saving."""
        before = self.total
        for name in names:
            for lin, side in self.touches.get(name, ()):
                old = self._flops(lin)
                self.shape[lin][side] -= width
                self.total += self._flops(lin) - old
        return before - self.total
