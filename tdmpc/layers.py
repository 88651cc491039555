"""Building blocks of the world model.

Every hidden layer is the triple ``nn.Linear -> nn.LayerNorm -> Mish`` (optionally followed by
``nn.Dropout``) inside a plain ``nn.Sequential``, so that a hidden channel ``i`` of layer ``k`` is
exactly: row ``i`` of ``Linear_k`` (weight and bias), element ``i`` of the following LayerNorm (weight
and bias) and column ``i`` of the next ``nn.Linear``. This is the structure ``pruning/`` relies on to
remove channels for real.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from tdmpc.math import SimNorm


class _MishFunction(torch.autograd.Function):
    """Mish with a single ``exp`` and a fused backward.

    ``tanh(softplus(x)) = n / (n + 2)`` with ``n = e^x (e^x + 2)``. ATen's mish evaluates exp, log1p and
    tanh separately and was measured 2-3x slower than this on the 2-core CPU preset, where Mish
    dominated planning time. Exact to float rounding (``x`` is clamped at 20, where ``t == 1``).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        e = torch.exp(x.clamp(max=20.0))
        n = e * (e + 2)
        t = n / (n + 2)
        ctx.save_for_backward(x, t, e)
        return x * t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, t, e = ctx.saved_tensors
        # d/dx x tanh(sp(x)) = tanh(sp(x)) + x sech^2(sp(x)) sigmoid(x)
        return grad * (t + x * (1 - t * t) * (e / (1 + e)))


def _mish_no_grad(x: torch.Tensor) -> torch.Tensor:
    """The forward of :class:`_MishFunction` with in-place steps, for when no gradient is needed.

    Bit-identical to ``_MishFunction.forward`` (same operations, same order; ``*`` commutes exactly).
    Skipping ``autograd.Function.apply`` (context, saved tensors) and three allocations saves ~50 us
    per call; planning calls Mish ~75 times per action, so a planned action of the CPU preset is
    ~6-7 ms faster (91 -> 84 ms dense, 57 -> 50 ms at 50 % of the hidden channels pruned, 1 thread).
    """
    e = x.clamp(max=20.0).exp_()
    n = (e + 2).mul_(e)
    return n.div_(n + 2).mul_(x)


class Mish(nn.Module):
    """``x * tanh(softplus(x))`` (Misra 2019), a drop-in for ``nn.Mish`` that is faster on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            return _MishFunction.apply(x)
        return _mish_no_grad(x)


def mlp(
    in_dim: int,
    hidden_dims: list[int],
    out_dim: int,
    out_act: nn.Module | None = None,
    dropout: float = 0.0,
) -> nn.Sequential:
    """``Linear -> LayerNorm -> Mish`` for each hidden width, then the output layer.

    With ``out_act`` (e.g. :class:`SimNorm`) the output layer is ``Linear -> LayerNorm -> out_act``
    (TD-MPC2's ``NormedLinear``); without it, a plain ``Linear``. ``dropout`` is applied after the first
    hidden activation only (TD-MPC2 applies it to the first layer of the Q-functions).
    """
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden_dims]
    for i in range(len(hidden_dims)):
        layers += [nn.Linear(dims[i], dims[i + 1]), nn.LayerNorm(dims[i + 1]), Mish()]
        if dropout > 0 and i == 0:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(dims[-1], out_dim))
    if out_act is not None:
        layers += [nn.LayerNorm(out_dim), out_act]
    return nn.Sequential(*layers)


def _member_pre_hooks(linears: tuple[nn.Linear, ...], h: torch.Tensor) -> torch.Tensor:
    """Run the forward pre-hooks of the members' ``nn.Linear`` s on their slice of the stacked input.

    The stacked forward never calls the members' modules, so hooks registered on them (e.g. to capture
    activations and their gradients) would never fire. While gradients are recorded and at least one
    member has a pre-hook, each member's input ``h[e]`` is passed to its hooks (a hook may return a
    replacement, as for a normal module call) and the slices are stacked again, so a gradient hook on the
    slice sees exactly that member's input gradient. Stacking slices is an exact copy: outputs and
    gradients are bit-identical to the plain path. Under ``no_grad`` (planning) hooks are not called.
    """
    if not (torch.is_grad_enabled() and any(m._forward_pre_hooks for m in linears)):
        return h
    parts = []
    for m, part in zip(linears, h.unbind(0)):
        for hook in m._forward_pre_hooks.values():
            out = hook(m, (part,))
            if out is not None:
                part = out[0] if isinstance(out, tuple) else out
        parts.append(part)
    return torch.stack(parts)


class StackedHookHandle:
    """What :meth:`QEnsemble.register_stacked_input_hook` returns: :meth:`remove` unregisters the hook."""

    def __init__(self, hooks: OrderedDict, key: tuple[int, int, int]):
        self._hooks, self._key = hooks, key

    def remove(self) -> None:
        self._hooks.pop(self._key, None)


class QEnsemble(nn.Module):
    """An ensemble of independent Q-networks evaluated in one batched pass.

    The members are stored as separate, plain ``nn.Sequential`` MLPs in ``self.members`` (so each
    member's hidden channel ``i`` of layer ``k`` is addressed as ``members[m][layer].weight[i]`` exactly as
    in any other MLP), and the forward pass stacks their weights layer by layer and runs a batched
    matmul. ``torch.func.stack_module_state`` is not used because its stacked tensors are new leaves:
    gradients would not reach the members' parameters. Members must share their layer widths (a pruned
    ensemble removes the same *number* of channels from every member, chosen per member).
    """

    def __init__(self, members: list[nn.Sequential]):
        super().__init__()
        if not members:
            raise ValueError("QEnsemble needs at least one member")
        self.members = nn.ModuleList(members)
        # (stacked layer index, id(hook), n) -> (stacked layer index, hook); see register_stacked_input_hook
        self._stacked_input_hooks: OrderedDict[tuple[int, int, int], tuple[int, Callable]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.members)

    def stacked_linears(self) -> list[tuple[nn.Linear, ...]]:
        """The members' ``nn.Linear`` s per layer position, each tuple evaluated as one stacked call."""
        return [layers for layers in zip(*self.members) if isinstance(layers[0], nn.Linear)]

    def register_stacked_input_hook(self, index: int, hook: Callable) -> StackedHookHandle:
        """Call ``hook(h, members)`` before the ``index``-th stacked ``nn.Linear`` (:meth:`stacked_linears`)
        while gradients are recorded: ``h`` is the stacked input ``(len(members), N, in)``, row ``j`` that of
        member ``members[j]`` (``members``: a list of ints; an int64 tensor in a compiled
        :meth:`forward_indexed`); a returned tensor replaces ``h`` (it must have its values). One hook serves
        every member (e.g. ``pruning.gates`` captures activation x gradient on the stacked tensor)."""
        # Keyed by what is registered, not by a fresh handle id: a compiled graph that runs these hooks is
        # guarded on the keys, so the same hook removed and registered again (pruning.gates between gate
        # updates) finds its graph again instead of recompiling.
        n = 0
        while (int(index), id(hook), n) in self._stacked_input_hooks:
            n += 1
        key = (int(index), id(hook), n)
        self._stacked_input_hooks[key] = (int(index), hook)
        return StackedHookHandle(self._stacked_input_hooks, key)

    def _member_hooks(self) -> bool:
        return any(m._forward_pre_hooks for net in self.members for m in net if isinstance(m, nn.Linear))

    def _has_hooks(self) -> bool:
        return bool(self._stacked_input_hooks) or self._member_hooks()

    def _run_stacked_hooks(self, index: int, h: torch.Tensor, members: list[int]) -> torch.Tensor:
        for k, hook in list(self._stacked_input_hooks.values()):
            if k == index:
                out = hook(h, members)
                if out is not None:
                    h = out
        return h

    def forward(self, x: torch.Tensor, detach: bool = False, members: list[int] | None = None) -> torch.Tensor:
        """``x`` of shape ``(..., in)`` -> ``(num_members, ..., out)``.

        ``members`` selects a subset of members (in that order; default all). ``detach=True`` evaluates
        with detached parameters (gradients flow to ``x`` only), as used by the policy loss.
        """
        idx = list(range(len(self.members))) if members is None else list(members)
        nets = [self.members[i] for i in idx]
        lead = x.shape[:-1]
        h = x.reshape(1, -1, x.shape[-1]).expand(len(nets), -1, -1)
        hooked = bool(self._stacked_input_hooks) and torch.is_grad_enabled()
        k = 0  # index of the stacked Linear
        for layers in zip(*nets):
            if isinstance(layers[0], nn.Linear):
                if hooked:
                    h = self._run_stacked_hooks(k, h, idx)
                k += 1
                h = _member_pre_hooks(layers, h)
            h = _stacked_layer(layers, h, detach)
        return h.reshape(len(nets), *lead, h.shape[-1])

    def forward_indexed(self, x: torch.Tensor, members: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """The members ``members`` (an int64 tensor ``(k,)``) at ``x (..., in)`` -> ``(k, ..., out)``, without
        reading the indices on the host (unless hooked, below): every member's weights are stacked and the
        chosen ones picked with ``index_select``. Same numbers as ``forward(x, members=members.tolist())``
        (the same stacked weights reach the same ``baddbmm``), but traceable as one graph (``torch.compile``,
        ONNX export), where a Python list of members would be a host sync and a graph break.

        While gradients are recorded and a hook is registered: inside a compiled graph, the stacked-input
        hooks (:meth:`register_stacked_input_hook`) are called here with ``members`` as the tensor; otherwise
        (eagerly, or with a pre-hook on a member's ``nn.Linear``) this *is* ``forward(x,
        members=members.tolist())``, so that the hooks see these calls too (one host read of ``members``)."""
        hooked = torch.is_grad_enabled() and self._has_hooks()
        if hooked and not (torch.compiler.is_compiling() and not self._member_hooks()):
            return self.forward(x, detach=detach, members=members.tolist())
        lead = x.shape[:-1]
        h = x.reshape(1, -1, x.shape[-1]).expand(members.shape[0], -1, -1)
        k = 0  # index of the stacked Linear
        for layers in zip(*self.members):
            if hooked and isinstance(layers[0], nn.Linear):
                h = self._run_stacked_hooks(k, h, members)
                k += 1
            h = _stacked_layer(layers, h, detach, members)
        return h.reshape(members.shape[0], *lead, h.shape[-1])


def _stacked_layer(layers: tuple[nn.Module, ...], h: torch.Tensor, detach: bool,
                   index: torch.Tensor | None = None) -> torch.Tensor:
    """One layer position of a :class:`QEnsemble` on the stacked input ``h (E, N, in)``: the members' weights
    stacked (``index`` picks the rows of the chosen members from all of them) and applied in one batched call."""
    first = layers[0]
    if isinstance(first, (nn.Linear, nn.LayerNorm)):
        w = torch.stack([m.weight for m in layers])  # (E, out, in) or (E, F)
        b = torch.stack([m.bias for m in layers])
        if index is not None:
            w, b = w.index_select(0, index), b.index_select(0, index)
        if detach:
            w, b = w.detach(), b.detach()
        if isinstance(first, nn.Linear):
            return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        return F.layer_norm(h, first.normalized_shape, eps=first.eps) * w.unsqueeze(1) + b.unsqueeze(1)
    if isinstance(first, (Mish, nn.Mish, nn.Dropout, SimNorm)):
        return first(h)
    raise TypeError(f"QEnsemble cannot batch layer type {type(first).__name__}")  # pragma: no cover - guarded by construction
