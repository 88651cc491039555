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
\partial \ell_i / \partial m_c`; :class:`Capture` scales it by ``S`` to :math:`d_{i,c} = \partial \ell_i
/ \partial m_c`, the derivative of sample :math:`i`'s own loss.

Mechanics (the cost is paid in every update, so it is kept to a few tensor operations per call):

- a forward pre-hook on every consumer ``nn.Linear`` replaces its input by an alias read by that call
  only (for an input that does not require grad, e.g. a detached latent read by the policy, a detached
  copy that does; values are unchanged) and registers a tensor hook on it;
- the tensor hook forms ``x * grad``, sums it over the positions of each sample (one ``sum`` over the
  leading dimension when a call holds several rows per sample) and writes it into the consumer's
  columns of one preallocated float64 buffer ``(S, W)`` (``W``: the input columns of all consumers):
  the first call of an update copies, later calls add. Nothing else happens per call: no Python loop
  over channels or groups, no host synchronisation;
- an **ensemble evaluated as one stacked call** (a module with ``stacked_linears()`` and
  ``register_stacked_input_hook(index, hook)``, e.g. the TD-MPC ``QEnsemble``) gets one hook per
  stacked layer on its stacked input ``(E, N, F)`` instead of one per member: member ``e``'s columns lie
  side by side in the buffer and one product and reduction serve every member. Members of a model
  given without its ``model`` fall back to member pre-hooks, which the ensemble then runs itself;
- :class:`Capture` (what :meth:`GateCapture.take` returns) reduces the buffer only when asked: the
  per-channel mean :math:`\frac1S\sum_i d_{i,c}` and mean square :math:`\frac1S\sum_i d_{i,c}^2` (one
  column reduction each, then one ``index_add_`` onto the channels; a channel read by several consumers,
  such as the latent, first sums its columns per sample), or the full ``(S, C)`` matrix.

Nothing happens while gradients are not recorded (``no_grad`` acting and planning).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from pruning.groups import Group


class _Block:
    """The buffer columns ``start .. start + members * width`` of one consumer (``members=1``) or of one
    stacked call of an ensemble's member ``nn.Linear`` s (member ``e`` at ``start + e * width``)."""

    __slots__ = ("start", "members", "width", "stacked")

    def __init__(self, start: int, members: int, width: int, stacked: bool):
        self.start, self.members, self.width, self.stacked = start, members, width, stacked

    def view(self, buf: torch.Tensor) -> torch.Tensor:
        """``(members, S, width)`` view of the block's columns of ``buf`` ``(S, W)`` (or ``(W,)``)."""
        cols = buf[..., self.start: self.start + self.members * self.width]
        if buf.dim() == 1:
            return cols.view(self.members, self.width)
        return cols.view(buf.shape[0], self.members, self.width).transpose(0, 1)


class Capture:
    """What one update's backward passes left (see the module doc), reduced on first request.

    ``gates``: ``(S, C)`` float64 per-sample derivatives :math:`d_{i,c}`; ``mean``: ``(C,)``
    :math:`\\frac1S\\sum_i d_{i,c}`; ``sq_mean``: ``(C,)`` :math:`\\frac1S\\sum_i d_{i,c}^2`;
    ``activation_sq``: ``(C,)`` mean squared activation of every channel over all positions where it
    was read (only with ``activations=True``). Each is ``None`` where nothing was captured.

    The values live in the capture's buffer until the next update's first backward call overwrites it:
    read them before that (the tracker does, in ``step``); a later read raises ``RuntimeError``.
    """

    def __init__(self, owner: GateCapture | None = None, generation: int = -1, buf: torch.Tensor | None = None,
                 act: torch.Tensor | None = None):
        self._owner, self._generation, self._buf, self._act = owner, generation, buf, act
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def empty(self) -> bool:
        return self._buf is None and self._act is None

    def _check(self) -> None:
        if self._owner is not None and self._owner._generation != self._generation:
            raise RuntimeError("gate capture: this update's values were overwritten by a later backward pass "
                               "(read a Capture before the next update)")

    def _cached(self, key: str, fn) -> torch.Tensor | None:
        if key not in self._cache:
            self._check()
            self._cache[key] = fn()
        return self._cache[key]

    @property
    def samples(self) -> int | None:
        return None if self._buf is None else self._buf.shape[0]

    @property
    def gates(self) -> torch.Tensor | None:
        if self._buf is None:
            return None
        return self._cached("gates", lambda: self._owner._to_channels(self._buf, dim=1) * self._buf.shape[0])

    @property
    def mean(self) -> torch.Tensor | None:
        if self._buf is None:
            return None
        return self._cached("mean", lambda: self._owner._to_channels(self._buf.sum(0)))

    @property
    def sq_mean(self) -> torch.Tensor | None:
        if self._buf is None:
            return None
        return self._cached("sq_mean", lambda: self._owner._sq_mean(self._buf))

    @property
    def activation_sq(self) -> torch.Tensor | None:
        if self._act is None:
            return None

        def reduce():
            act = self._owner._to_channels(self._act, dim=1)
            return act[0] / act[1].clamp_min(1)
        return self._cached("activation_sq", reduce)


class GateCapture:
    """Accumulates per-sample gate derivatives of the channels of ``groups`` (see the module doc).

    Channel ``c`` of group ``k`` sits at flat position ``offsets[k] + c`` (``offsets`` as in
    :class:`pruning.importance.ChannelLayout`). ``model``: where to look for ensembles evaluated as one
    stacked call (``None``: every consumer gets its own pre-hook). Call :meth:`take` after the backward
    passes of an update, :meth:`reset` to drop what was captured, :meth:`remove` to unregister the hooks.
    """

    def __init__(self, groups: Sequence[Group], offsets: Sequence[int], num_channels: int,
                 samples: int | None = None, activations: bool = False, model: nn.Module | None = None):
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
        stacks = self._stacks(model, spans)
        stacked = {m for _, _, linears in stacks for m in linears}
        units = [(None, None, (m,)) for m in spans if m not in stacked] + stacks
        dst: list[torch.Tensor] = []
        self._blocks: list[_Block] = []
        self._handles = []
        width_total = 0
        for owner, index, linears in units:
            width = linears[0].weight.shape[1]
            block = _Block(width_total, len(linears), width, owner is not None)
            for m in linears:
                d = torch.full((width,), num_channels, dtype=torch.long)
                for col, w, flat in spans.get(m, []):
                    d[col: col + w] = torch.arange(flat, flat + w)
                dst.append(d)
            width_total += block.members * width
            self._blocks.append(block)
            if owner is None:
                self._handles.append(linears[0].register_forward_pre_hook(
                    lambda mod, args, b=block: self._pre_hook(b, args)))
            else:
                self._handles.append(owner.register_stacked_input_hook(
                    index, lambda h, members, b=block: self._probe(b, h, members) if torch.is_grad_enabled() else None))
        self._dst = torch.cat(dst) if dst else torch.zeros(0, dtype=torch.long)
        self.width = width_total
        # Channels read by several consumer columns (a coupled dimension): per sample, their columns are
        # summed before squaring.
        reads = torch.bincount(self._dst, minlength=num_channels + 1)[:num_channels]
        multi = torch.nonzero(reads > 1).flatten()
        rank = torch.full((num_channels + 1,), -1, dtype=torch.long)
        rank[multi] = torch.arange(len(multi))
        self._multi = multi
        self._multi_cols = torch.nonzero(rank[self._dst] >= 0).flatten()
        self._multi_dst = rank[self._dst][self._multi_cols]
        self._buf: torch.Tensor | None = None  # (S, W) float64
        self._act: torch.Tensor | None = None  # (2, W): sum of x^2, number of positions
        self._written: set[int] = set()  # ids of the blocks written in this update
        self._generation = 0

    @staticmethod
    def _stacks(model: nn.Module | None, spans: dict) -> list[tuple[nn.Module, int, tuple[nn.Linear, ...]]]:
        """``(ensemble, stacked layer index, member Linears)`` for every stacked call that holds a consumer."""
        out = []
        for mod in (model.modules() if model is not None else ()):
            layers = getattr(mod, "stacked_linears", None)
            if callable(layers) and callable(getattr(mod, "register_stacked_input_hook", None)):
                for index, linears in enumerate(layers()):
                    if any(m in spans for m in linears):
                        out.append((mod, index, tuple(linears)))
        return out

    # ------------------------------------------------------------------------------ hooks
    def _pre_hook(self, block: _Block, args: tuple):
        if not torch.is_grad_enabled() or not args:
            return None
        return (self._probe(block, args[0], None), *args[1:])

    def _probe(self, block: _Block, x: torch.Tensor, members: list[int] | None) -> torch.Tensor:
        # A fresh alias read by this call only: a hook on ``x`` itself would see the gradient of every
        # use of ``x`` (e.g. a latent read by two heads). Its value is ``x``'s, so nothing else changes.
        alias = x.view_as(x) if x.requires_grad else x.detach().requires_grad_()
        value = x.detach()
        alias.register_hook(lambda grad: self._add(block, value, members, grad))
        return alias

    def _buffer(self, s: int, device: torch.device) -> torch.Tensor:
        buf = self._buf
        if buf is not None and buf.shape[0] == s and buf.device == device:
            return buf
        if self._written:
            raise RuntimeError(f"gate capture: calls of one update disagree on the number of samples "
                               f"({buf.shape[0]} vs {s}); pass samples=<batch size>")
        self._buf = torch.empty(s, self.width, dtype=torch.float64, device=device)
        return self._buf

    def _add(self, b: _Block, x: torch.Tensor, members: list[int] | None, grad: torch.Tensor) -> None:
        lead = x.shape[0] if b.stacked else 1  # members in this call
        rows = x.numel() // (lead * b.width)  # positions per member
        s = self.samples or rows
        if rows % s:
            raise RuntimeError(f"gate capture: a consumer input has {rows} rows, not a multiple of "
                               f"samples={s}; the batch must be the innermost leading dimension")
        if not self._written:  # first call of an update: what a previous Capture reads is overwritten
            self._generation += 1
        buf = self._buffer(s, x.device)
        prod = (x * grad).reshape(lead, rows // s, s, b.width)
        per = prod[:, 0] if rows == s else prod.sum(1)  # (lead, S, width)
        view = b.view(buf)
        first = id(b) not in self._written
        if members is None or members == list(range(b.members)):
            if first:
                view.copy_(per)
            else:
                view.add_(per)
        else:  # a subset of an ensemble's members, in the order given
            if first:
                view.zero_()
            view.index_add_(0, torch.as_tensor(members, device=buf.device), per.to(buf.dtype))
        self._written.add(id(b))
        if self.activations:
            self._add_activations(b, x, members, rows, lead)

    def _add_activations(self, b: _Block, x: torch.Tensor, members: list[int] | None, rows: int, lead: int) -> None:
        if self._act is None or self._act.device != x.device:
            self._act = torch.zeros(2, self.width, dtype=torch.float64, device=x.device)
        sq = x.reshape(lead, rows, b.width).square().sum(1).to(torch.float64)  # (lead, width)
        idx = torch.arange(lead) if members is None else torch.as_tensor(members)
        b.view(self._act[0]).index_add_(0, idx.to(x.device), sq)
        b.view(self._act[1]).index_add_(0, idx.to(x.device), torch.full_like(sq, rows))

    # ------------------------------------------------------------------------------ reductions
    def _to_channels(self, cols: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Sum columns (along ``dim``, length ``W``) onto the channels they belong to."""
        dst = self._dst.to(cols.device)
        shape = list(cols.shape)
        shape[dim] = self.num_channels + 1
        out = torch.zeros(shape, dtype=cols.dtype, device=cols.device).index_add_(dim, dst, cols)
        return out.narrow(dim, 0, self.num_channels)

    def _sq_mean(self, buf: torch.Tensor) -> torch.Tensor:
        """``(C,)`` :math:`\\frac1S\\sum_i d_{i,c}^2` with :math:`d = S\\cdot` buffer."""
        s = buf.shape[0]
        sq = self._to_channels(torch.linalg.vector_norm(buf, dim=0).square())
        if len(self._multi):
            cols = buf.index_select(1, self._multi_cols.to(buf.device))
            per = torch.zeros(s, len(self._multi), dtype=buf.dtype, device=buf.device)
            per.index_add_(1, self._multi_dst.to(buf.device), cols)
            sq[self._multi.to(buf.device)] = per.square().sum(0)
        return sq * s

    # ------------------------------------------------------------------------------ per update
    def take(self) -> Capture:
        """What was captured since the last reset (see :class:`Capture`); resets."""
        if not self._written and self._act is None:
            return Capture()
        buf = self._buf if self._written else None
        if buf is not None:
            for b in self._blocks:
                if id(b) not in self._written:  # not called in this update: no evidence, zero
                    b.view(buf).zero_()
        cap = Capture(self, self._generation, buf, self._act)
        self._written = set()
        self._act = None
        return cap

    def reset(self) -> None:
        self._written = set()
        self._act = None
        self._generation += 1

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.reset()
        self._buf = None
