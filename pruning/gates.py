r"""Per-sample derivatives of the loss with respect to a multiplicative gate on every channel.

Imagine a gate :math:`m_c` (value 1) multiplying channel :math:`c` wherever it is *read*: at the input
columns of every ``nn.Linear`` that consumes the channel (the slices with ``dim=1`` of the channel's
group: the next layer of a hidden channel; every first layer that reads a coupled dimension such as the
TD-MPC latent). Setting the gate to 0 removes the channel's contribution to everything downstream.
For an input :math:`x` of a consumer and the gradient :math:`\partial L / \partial x` that autograd
computes anyway,

.. math::  \frac{\partial L}{\partial m_c} = \sum_{\text{calls}} \sum_{p} x_{p,c}\,
           \frac{\partial L}{\partial x_{p,c}}

(sum over every call of every consumer in the backward passes since the last reset, and over the
positions :math:`p` of each call). :class:`GateCapture` keeps this sum **per sample**: position ``p``
of a call (leading dimensions flattened) belongs to sample ``p mod S`` where ``S`` = ``samples``, i.e.
the batch is the innermost leading dimension (``(B, F)``, ``(H, B, F)``, or a stacked ensemble's
``(E, H·B, F)`` all satisfy this). With ``samples=None`` every row of a call is its own sample.

The losses are means over the batch, so the captured sum for sample :math:`i` is :math:`\frac1S
\partial \ell_i / \partial m_c`; :meth:`GateCapture.take` returns :math:`\partial \ell_i / \partial
m_c` (multiplied by ``S``), the derivative of sample :math:`i`'s own loss.

Mechanics: a forward pre-hook on every consumer ``nn.Linear`` replaces its input by an alias read by
that call only (for an input that does not require grad, e.g. a detached latent read by the policy, a
detached copy that does; values are unchanged) and registers a tensor hook on it; the tensor hook multiplies input and input-gradient, reduces to
samples and adds the consumer's columns onto the flat channel vector. Nothing happens while gradients
are not recorded (``no_grad`` acting and planning). A model whose consumers are not called as modules
must run their pre-hooks itself (the TD-MPC agent's stacked Q-ensemble does for its members).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn as nn

from pruning.groups import Group


class Capture(NamedTuple):
    """What one update's backward passes left: per-sample gate derivatives ``(S, C)`` (scaled to each
    sample's own loss) and, if asked for, the mean squared activation ``(C,)`` of every channel over all
    positions where it was read; ``None`` where nothing was captured."""

    gates: torch.Tensor | None
    activation_sq: torch.Tensor | None


class GateCapture:
    """Accumulates per-sample gate derivatives of the channels of ``groups`` (see the module doc).

    Channel ``c`` of group ``k`` sits at flat position ``offsets[k] + c`` (``offsets`` as in
    :class:`pruning.importance.ChannelLayout`). Call :meth:`take` after the backward passes of an
    update, :meth:`reset` to drop what was captured, :meth:`remove` to unregister the hooks.
    """

    def __init__(self, groups: Sequence[Group], offsets: Sequence[int], num_channels: int,
                 samples: int | None = None, activations: bool = False):
        if samples is not None and samples < 1:
            raise ValueError(f"samples must be a positive batch size or None, got {samples!r}")
        self.num_channels, self.samples, self.activations = num_channels, samples, activations
        # consumer Linear -> [(column offset, width, flat offset)]
        spans: dict[nn.Linear, list[tuple[int, int, int]]] = {}
        for g, off in zip(groups, offsets):
            for s in g.slices:
                if isinstance(s.module, nn.Linear) and s.param_name == "weight" and s.dim == 1 \
                        and s.param.requires_grad:
                    spans.setdefault(s.module, []).append((s.offset, g.size, off))
        self.consumers = spans
        self._acc: torch.Tensor | None = None
        self._act: torch.Tensor | None = None  # (2, C): sum of x^2, number of positions
        self._handles = [m.register_forward_pre_hook(self._pre_hook) for m in spans]

    def _pre_hook(self, module: nn.Module, args: tuple):
        if not torch.is_grad_enabled() or not args:
            return None
        x = args[0]
        # A fresh alias read by this call only: a hook on ``x`` itself would see the gradient of every
        # use of ``x`` (e.g. a latent read by two heads). Its value is ``x``'s, so nothing else changes.
        alias = x.view_as(x) if x.requires_grad else x.detach().requires_grad_()
        value, spans = x.detach(), self.consumers[module]
        alias.register_hook(lambda grad: self._add(value, grad, spans))
        return (alias, *args[1:])

    def _add(self, x: torch.Tensor, grad: torch.Tensor, spans: list[tuple[int, int, int]]) -> None:
        prod = (x * grad).reshape(-1, x.shape[-1])
        rows = prod.shape[0]
        s = self.samples or rows
        if rows % s:
            raise RuntimeError(f"gate capture: a consumer input has {rows} rows, not a multiple of "
                               f"samples={s}; the batch must be the innermost leading dimension")
        per = prod.reshape(rows // s, s, -1).sum(0).to(torch.float64)  # (S, in)
        if self._acc is None:
            self._acc = torch.zeros(s, self.num_channels, dtype=torch.float64, device=per.device)
        elif self._acc.shape[0] != s:
            raise RuntimeError(f"gate capture: calls of one update disagree on the number of samples "
                               f"({self._acc.shape[0]} vs {s}); pass samples=<batch size>")
        for col, width, flat in spans:
            self._acc[:, flat: flat + width] += per[:, col: col + width]
        if self.activations:
            sq = x.reshape(-1, x.shape[-1]).square().sum(0).to(torch.float64)
            if self._act is None:
                self._act = torch.zeros(2, self.num_channels, dtype=torch.float64, device=sq.device)
            for col, width, flat in spans:
                self._act[0, flat: flat + width] += sq[col: col + width]
                self._act[1, flat: flat + width] += rows

    def take(self) -> Capture:
        """What was captured since the last reset (see :class:`Capture`); resets."""
        acc, act = self._acc, self._act
        self.reset()
        gates = None if acc is None else acc * acc.shape[0]
        act_sq = None if act is None else act[0] / act[1].clamp_min(1)
        return Capture(gates, act_sq)

    def reset(self) -> None:
        self._acc = None
        self._act = None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._acc = None
