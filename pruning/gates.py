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

- a forward pre-hook on every consumer ``nn.Linear`` passes its input through an identity autograd
  function read by that call only (for an input that does not require grad, e.g. a detached latent read
  by the policy, a detached copy that does; values are unchanged), whose backward sees the gradient;
- that backward forms ``x * grad``, sums it over the positions of each sample (one fused multiply-add per
  position, ``addcmul_``, when a call holds several rows per sample) and writes it into the consumer's
  buffer ``(members, S, in)``, a view of its columns of one preallocated ``(S, columns)`` buffer shared by
  every consumer (in the input's dtype, float32 in training; reused from update to update): the first
  call of an update writes, later calls add. Nothing else happens per call: no Python loop over channels
  or groups, no host synchronisation;
- an **ensemble evaluated as one stacked call** (a module with ``stacked_linears()`` and
  ``register_stacked_input_hook(index, hook)``, e.g. the TD-MPC ``QEnsemble``) gets one hook per
  stacked layer on its stacked input ``(E, N, F)`` instead of one per member: member ``e``'s columns lie
  side by side in one buffer and one product and reduction serve every member. Members of a model
  given without its ``model`` fall back to member pre-hooks, which the ensemble then runs itself;
- :class:`Capture` (what :meth:`GateCapture.take` returns) reduces the buffer only when asked: the
  per-channel mean :math:`\frac1S\sum_i d_{i,c}` and mean square :math:`\frac1S\sum_i d_{i,c}^2` (one
  sum and one sum of squares over the samples of the shared buffer, in its dtype, then one float64
  ``index_add_`` onto the channels; a channel read by several consumers, such as the latent, first sums
  its columns per sample), or the full ``(S, C)`` matrix.

Nothing happens while gradients are not recorded (``no_grad`` acting and planning). A backward pass that
builds a graph (``create_graph=True``, e.g. the inner ``torch.autograd.grad`` of an input-gradient penalty)
captures nothing itself: its gradients are not the loss's. With a gate, the gradient it passes through a
consumer's input would be ``m * u``, so a loss that reads it also depends on the gate that way; an identity
node (``_Tap`` again, on the gradient) in that pass's graph adds :math:`\sum_p u_{p,c}\,\partial L/\partial(m u)_{p,c}` when the
loss's own backward reaches it. The captured sums are then those of the whole loss (tested against
``torch.func`` with a gradient penalty). Every backward pass *without* ``create_graph`` that reaches a
consumer counts as the loss's (call ``GateCapture.reset()`` after one that is not).

**Inside a compiled graph** (``torch.compiler.is_compiling()``) a Python callback in the backward pass
cannot be traced, so the hooks place the gate itself: the consumer's input ``x`` becomes ``x * m`` with a
leaf ``m`` of ones ``(members, S, in)`` per consumer (the same tensor for every call of the update,
broadcast over the positions of each sample), and autograd computes :math:`\partial L/\partial m_{i,c} =
\sum_{\text{calls}}\sum_{p \in i} x_{p,c}\,\partial L/\partial x_{p,c}` into ``m.grad``: the same sums
the buffers hold, fused by the compiler into the backward kernels. ``x * 1`` is ``x`` exactly, so training
is unchanged. :meth:`GateCapture.take` reads (and clears) ``m.grad`` next to the buffers. This needs
``samples`` (``m`` has a fixed shape) and no activation capture; then every hook callable carries
:data:`TRACEABLE_HOOK`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from pruning.groups import Group

#: The attribute by which the hooks of a :class:`GateCapture` declare that ``torch.compile`` may trace them
#: (set to ``True`` on every hook callable when ``samples`` is given and no activations are captured; a
#: model's compiled training step may then trace them instead of running eagerly, as the TD-MPC agent does,
#: ``tdmpc.agent.TRACEABLE_HOOK``). Plain data: this package imports no model code.
TRACEABLE_HOOK = "compile_traceable"


class _Block:
    """One consumer ``nn.Linear`` (``members=1``) or one stacked call of an ensemble's member ``nn.Linear`` s:
    its columns ``start .. start + members * width`` of the flat column order (member ``e`` at ``start + e *
    width``) that ``GateCapture._dst`` maps onto channels; its buffer ``(members, S, width)`` is a view of
    those columns of the capture's one ``(S, columns)`` buffer."""

    __slots__ = ("index", "start", "members", "width", "stacked")

    def __init__(self, index: int, start: int, members: int, width: int, stacked: bool):
        self.index, self.start, self.members, self.width, self.stacked = index, start, members, width, stacked


class _Tap(torch.autograd.Function):
    """Identity whose backward hands ``(input, gradient)`` to :meth:`GateCapture._add`.

    One autograd node per consumer call. (A tensor hook on a ``view_as`` alias does the same; measured,
    ``Tensor.register_hook`` took ~23 us per call inside a CPU-preset update, a ``Function.apply`` ~6 us
    on its own; the end-to-end overhead did not change measurably, ``benchmarks/RESULTS.md``.)

    In a ``create_graph`` backward pass the gradient ``u`` passed on is itself tapped: with a gate ``m`` it would
    be ``m * u``, so a loss that reads it (a gradient penalty) depends on ``m`` that way too, and the loss's own
    backward pass hands ``(u, dL/d(m u))`` to :meth:`GateCapture._add`, that path's share of the derivative."""

    @staticmethod
    def forward(ctx, x, capture, block, members):
        ctx.capture, ctx.block, ctx.members = capture, block, members
        ctx.save_for_backward(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # a create_graph backward (e.g. a gradient penalty's inner gradient):
            return _Tap.apply(grad, ctx.capture, ctx.block, ctx.members), None, None, None  # the gate on u
        ctx.capture._add(ctx.block, x, ctx.members, grad)
        return grad, None, None, None


class Capture:
    """What one update's backward passes left (see the module doc), reduced on first request.

    ``gates``: ``(S, C)`` float64 per-sample derivatives :math:`d_{i,c}`; ``mean``: ``(C,)``
    :math:`\\frac1S\\sum_i d_{i,c}`; ``sq_mean``: ``(C,)`` :math:`\\frac1S\\sum_i d_{i,c}^2`;
    ``activation_sq``: ``(C,)`` mean squared activation of every channel over all positions where it
    was read (only with ``activations=True``). Each is ``None`` where nothing was captured.

    The values live in the capture's buffers until the next update's first backward call overwrites them:
    read them before that (the tracker does, in ``step``); a later read raises ``RuntimeError``.
    """

    def __init__(self, owner: GateCapture | None = None, generation: int = -1,
                 flat: torch.Tensor | None = None, act: list[torch.Tensor] | None = None):
        self._owner, self._generation, self._flat, self._act = owner, generation, flat, act
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def empty(self) -> bool:
        return self._flat is None and self._act is None

    def _get(self, key: str, fn, source) -> torch.Tensor | None:
        if source is None:
            return None
        if key not in self._cache:
            if self._owner._generation != self._generation:
                raise RuntimeError("gate capture: this update's values were overwritten by a later backward "
                                   "pass (read a Capture before the next update)")
            self._cache[key] = fn()
        return self._cache[key]

    @property
    def samples(self) -> int | None:
        return None if self._flat is None else self._flat.shape[0]

    @property
    def gates(self) -> torch.Tensor | None:
        def full():
            return self._owner._to_channels(self._flat.to(torch.float64), dim=1) * self.samples
        return self._get("gates", full, self._flat)

    @property
    def mean(self) -> torch.Tensor | None:
        m = self._get("moments", lambda: self._owner._moments(self._flat), self._flat)
        return None if m is None else m[0]

    @property
    def sq_mean(self) -> torch.Tensor | None:
        m = self._get("moments", lambda: self._owner._moments(self._flat), self._flat)
        return None if m is None else m[1]

    @property
    def activation_sq(self) -> torch.Tensor | None:
        def reduce():
            act = self._owner._to_channels(torch.cat([a.flatten(1) for a in self._act], 1), dim=1)
            return act[0] / act[1].clamp_min(1)
        return self._get("activation_sq", reduce, self._act)


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
                if isinstance(s.module, nn.Linear) and s.param_name == "weight" and s.dim == 1 and not s.tied:
                    spans.setdefault(s.module, []).append((s.offset, g.size, off))
        self.consumers = spans
        stacks = self._stacks(model, spans)
        stacked = {m for _, _, linears in stacks for m in linears}
        units = [(None, None, (m,)) for m in spans if m not in stacked] + stacks
        dst: list[torch.Tensor] = []
        self._blocks: list[_Block] = []
        self._handles: list = []
        self._targets: list[tuple[nn.Module | None, int | None, nn.Linear, _Block]] = []  # where hooks go
        for owner, index, linears in units:
            width = linears[0].weight.shape[1]
            block = _Block(len(self._blocks), sum(len(d) for d in dst), len(linears), width, owner is not None)
            for m in linears:
                d = torch.full((width,), num_channels, dtype=torch.long)
                for col, w, flat in spans.get(m, []):
                    d[col: col + w] = torch.arange(flat, flat + w)
                dst.append(d)
            self._blocks.append(block)
            self._targets.append((owner, index, linears[0], block))
        self._dst = torch.cat(dst) if dst else torch.zeros(0, dtype=torch.long)
        self._plan_multi()
        self._flat: torch.Tensor | None = None  # (S, columns): every block's per-sample sums, in _dst order
        self._bufs: list[torch.Tensor] = []  # per block, the (members, S, width) view of its columns of _flat
        self._act: list[torch.Tensor] | None = None  # (2, members, width) each: sum of x^2, positions
        self._written: set[int] = set()  # indices of the blocks written in this update
        self._generation = 0
        self._device_copies: dict[tuple[int, torch.device], torch.Tensor] = {}
        # gate leaves for compiled graphs (see the module doc), one per block, ones (members, S, width)
        traceable = samples is not None and not activations
        self._leaves: list[torch.Tensor | None] = [
            torch.ones(block.members, samples, block.width, dtype=linear.weight.dtype, device=linear.weight.device,
                       requires_grad=True) if traceable else None
            for _, _, linear, block in self._targets]
        # the hook callables, built once: attach() after remove() registers the same functions again
        self._hook_fns = []
        for owner, _, _, block in self._targets:
            if owner is None:
                def fn(mod, args, b=block):
                    return self._pre_hook(b, args)
            else:
                def fn(h, members, b=block):
                    return self._probe(b, h, members) if torch.is_grad_enabled() else None
            setattr(fn, TRACEABLE_HOOK, traceable)
            self._hook_fns.append(fn)
        self.attach()

    def attach(self) -> None:
        """Register the hooks (done at construction; again after :meth:`remove`, keeping the buffers)."""
        if self._handles:
            return
        for (owner, index, linear, _), fn in zip(self._targets, self._hook_fns):
            if owner is None:
                self._handles.append(linear.register_forward_pre_hook(fn))
            else:
                self._handles.append(owner.register_stacked_input_hook(index, fn))

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

    def _plan_multi(self) -> None:
        """Channels read by several consumer columns (a coupled dimension): per sample, their columns are
        summed before squaring. ``_multi``: those channels; ``_multi_cols``: the columns that read them, and
        ``_multi_rank`` the position in ``_multi`` of each such column's channel."""
        n = self.num_channels
        reads = torch.bincount(self._dst, minlength=n + 1)[:n]
        self._multi = torch.nonzero(reads > 1).flatten()
        rank = torch.full((n + 1,), -1, dtype=torch.long)
        rank[self._multi] = torch.arange(len(self._multi))
        col_rank = rank[self._dst]
        self._multi_cols = torch.nonzero(col_rank >= 0).flatten()
        self._multi_rank = col_rank[self._multi_cols]

    # ------------------------------------------------------------------------------ hooks
    def _pre_hook(self, block: _Block, args: tuple):
        if not torch.is_grad_enabled() or not args:
            return None
        return (self._probe(block, args[0], None), *args[1:])

    def _probe(self, block: _Block, x: torch.Tensor, members: list[int] | torch.Tensor | None) -> torch.Tensor:
        if x.shape[-1] != block.width:  # the model was pruned under the hooks: the columns no longer match
            raise RuntimeError(f"gate capture: a consumer input has {x.shape[-1]} features, the hooks were built for "
                               f"{block.width}: the model was pruned; call tracker.after_pruning(keep)")
        if torch.compiler.is_compiling():
            return self._gate(block, x, members)
        # A fresh alias read by this call only: a hook on ``x`` itself would see the gradient of every
        # use of ``x`` (e.g. a latent read by two heads). Its value is ``x``'s, so nothing else changes.
        if not x.requires_grad:
            x = x.detach().requires_grad_()
        return _Tap.apply(x, self, block, members)

    def _gate(self, b: _Block, x: torch.Tensor, members: list[int] | torch.Tensor | None) -> torch.Tensor:
        """``x * m`` with the block's gate leaf ``m`` (the compiled path, see the module doc): ``m``'s rows of
        the members in this call (``members``: a list, a tensor, or ``None`` for every member)."""
        leaf = self._leaves[b.index]
        if leaf is None:
            raise RuntimeError("gate capture inside a compiled graph needs samples=<batch size> and no "
                               "activation capture (its hooks are not traceable otherwise)")
        lead, rows, s = self._call_shape(b, x, leaf.shape[1])
        if isinstance(members, torch.Tensor):
            gate = leaf.index_select(0, members)
        elif members is None or list(members) == list(range(b.members)):
            gate = leaf
        else:
            gate = leaf[list(members)]
        return (x.reshape(lead, rows // s, s, b.width) * gate.unsqueeze(1)).reshape(x.shape)

    def _buffer(self, b: _Block, s: int, like: torch.Tensor) -> torch.Tensor:
        """Block ``b``'s ``(members, S, width)`` view of the shared buffer, which is (re)allocated for ``s``
        samples on ``like``'s device when it has another shape or device."""
        flat = self._flat
        if flat is None or flat.shape[0] != s or flat.device != like.device:
            if self._written and flat.shape[0] != s:
                raise RuntimeError(f"gate capture: calls of one update disagree on the number of samples "
                                   f"({flat.shape[0]} vs {s}); pass samples=<batch size>")
            dtype = torch.promote_types(like.dtype, torch.float32)
            flat = self._flat = torch.empty(s, len(self._dst), dtype=dtype, device=like.device)
            self._bufs = [flat[:, k.start: k.start + k.members * k.width].unflatten(1, (k.members, k.width))
                          .transpose(0, 1) for k in self._blocks]
        return self._bufs[b.index]

    @staticmethod
    def _call_shape(b: _Block, x: torch.Tensor, samples: int | None) -> tuple[int, int, int]:
        """``(members in this call, positions per member, samples)`` of a consumer input ``x``; ``samples``
        ``None``: every row is a sample. Raises if the rows are not a multiple of the samples."""
        lead = x.shape[0] if b.stacked else 1
        rows = x.numel() // (lead * b.width)
        s = samples or rows
        inner = x.shape[-2] if x.dim() >= 2 else 1  # positions p of sample p mod S: (..., S, features)
        if rows % s or (samples is not None and inner % s):
            raise RuntimeError(f"gate capture: a consumer input of shape {tuple(x.shape)} does not hold samples={s} "
                               f"as its innermost leading dimension ((..., {s}, features)); pass samples=<the batch "
                               f"size of every update> (a batch of another size is not supported; one of a "
                               f"multiple of it is taken as a flattened (horizon * batch) input) and keep the "
                               f"batch innermost (e.g. (horizon, batch, features), not (batch, horizon, features))")
        return lead, rows, s

    def _add(self, b: _Block, x: torch.Tensor, members: list[int] | None, grad: torch.Tensor) -> None:
        lead, rows, s = self._call_shape(b, x, self.samples)
        if not self._written:  # first call of an update: what a previous Capture reads is overwritten
            self._generation += 1
        buf = self._buffer(b, s, x)
        xs = x.reshape(lead, rows // s, s, b.width)
        gs = grad.reshape(lead, rows // s, s, b.width)
        first = b.index not in self._written
        if members is None or members == list(range(b.members)):
            # sum over the positions r of each sample, fused: buf (+)= x_r * g_r, no temporaries
            if first:
                torch.mul(xs[:, 0], gs[:, 0], out=buf)
            else:
                buf.addcmul_(xs[:, 0], gs[:, 0])
            for r in range(1, rows // s):
                buf.addcmul_(xs[:, r], gs[:, r])
        else:  # a subset or permutation of an ensemble's members (row j is member members[j])
            done = set() if first else set(range(b.members))
            for j, e in enumerate(members):
                for r in range(rows // s):
                    if e in done:
                        buf[e].addcmul_(xs[j, r], gs[j, r])
                    else:
                        torch.mul(xs[j, r], gs[j, r], out=buf[e])
                        done.add(e)
            for e in set(range(b.members)) - done:
                buf[e].zero_()
        self._written.add(b.index)
        if self.activations:
            self._add_activations(b, x, members, rows, lead)

    def _add_activations(self, b: _Block, x: torch.Tensor, members: list[int] | None, rows: int, lead: int) -> None:
        if self._act is None:
            self._act = [torch.zeros(2, k.members, k.width, dtype=torch.float64, device=x.device)
                         for k in self._blocks]
        sq = x.reshape(lead, rows, b.width).square().sum(1).to(torch.float64)  # (lead, width)
        idx = (torch.arange(lead) if members is None else torch.as_tensor(members)).to(x.device)
        self._act[b.index][0].index_add_(0, idx, sq)
        self._act[b.index][1].index_add_(0, idx, torch.full_like(sq, rows))

    # ------------------------------------------------------------------------------ reductions
    def _on(self, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``index`` (a CPU plan tensor) on ``device``, copied once per device (no copy per update)."""
        if index.device == device:
            return index
        key = (id(index), device)
        if key not in self._device_copies:
            self._device_copies[key] = index.to(device)
        return self._device_copies[key]

    def _to_channels(self, cols: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Sum columns (along ``dim``, in block order) onto the channels they belong to."""
        dst = self._on(self._dst, cols.device)
        shape = list(cols.shape)
        shape[dim] = self.num_channels + 1
        out = torch.zeros(shape, dtype=cols.dtype, device=cols.device).index_add_(dim, dst, cols)
        return out.narrow(dim, 0, self.num_channels)

    def _moments(self, flat: torch.Tensor) -> torch.Tensor:
        """``(2, C)``: :math:`\\frac1S\\sum_i d_{i,c}` and :math:`\\frac1S\\sum_i d_{i,c}^2` with :math:`d = S\\cdot`
        buffer (one sum and one sum of squares over the samples of the shared ``(S, columns)`` buffer, then
        one ``index_add_``)."""
        s, dev = flat.shape[0], flat.device
        cols = torch.stack([flat.sum(0), torch.linalg.vecdot(flat, flat, dim=0)])
        out = self._to_channels(cols.to(torch.float64), dim=1)
        if len(self._multi):  # coupled channels: sum their columns per sample before squaring
            per = torch.zeros(s, len(self._multi), dtype=flat.dtype, device=dev).index_add_(
                1, self._on(self._multi_rank, dev), flat.index_select(1, self._on(self._multi_cols, dev)))
            out[1, self._on(self._multi, dev)] = torch.linalg.vecdot(per, per, dim=0).to(torch.float64)
        out[1] *= s
        return out

    # ------------------------------------------------------------------------------ per update
    def _take_leaves(self) -> None:
        """Move what compiled graphs left in the gate leaves' ``.grad`` into the buffers (added to what eager
        calls of the same update wrote) and clear it."""
        for b, leaf in zip(self._blocks, self._leaves):
            if leaf is None or leaf.grad is None:
                continue
            if not self._written:  # first evidence of an update: what a previous Capture reads is overwritten
                self._generation += 1
            if b.index in self._written:
                self._bufs[b.index].add_(leaf.grad)
            else:
                self._buffer(b, leaf.shape[1], leaf).copy_(leaf.grad)
                self._written.add(b.index)
            leaf.grad = None

    def take(self) -> Capture:
        """What was captured since the last reset (see :class:`Capture`); resets."""
        self._take_leaves()
        if not self._written and self._act is None:
            return Capture()
        flat = None
        if self._written:
            for b in self._blocks:
                if b.index not in self._written:  # not called in this update: no evidence, zero
                    self._bufs[b.index].zero_()
            flat = self._flat
        cap = Capture(self, self._generation, flat, self._act)
        self._written = set()
        self._act = None
        return cap

    def reset(self) -> None:
        for leaf in self._leaves:
            if leaf is not None:
                leaf.grad = None
        self._written = set()
        self._act = None
        self._generation += 1

    def remove(self) -> None:
        """Unregister the hooks and drop what was captured (the buffers are kept for :meth:`attach`)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.reset()
