r"""Per-channel reductions shared by the importance metrics (:mod:`pruning.metrics`).

Notation: a group (see :mod:`pruning.groups`) has channels :math:`c = 0..size-1`; channel :math:`c`
touches the parameter slice :math:`S_c` (rows / columns / elements of every ``ParamSlice`` of the group).
Slices of tied copies (``ParamSlice.tied``: the target Q-ensemble, pruned with its online twin) never
count, for any metric. A parameter the user froze (``requires_grad=False``) counts like any other: its
weights enter the magnitude metrics, and its gradient statistics are 0 (it has no ``.grad``). :math:`\theta` are the parameters,
:math:`g_t = \nabla_\theta L_t` their gradient at tracked update :math:`t` as stored in ``.grad`` (read
after clipping: TD-MPC clips the gradient norm to ``optim.grad_clip_norm`` in place before the
optimiser step, so the metrics see the clipped gradient the optimiser used).

- :func:`gradient_sums`: :math:`\sum_{S_c} g^2`, :math:`\sum_{S_c}\theta g`, :math:`\sum_{S_c}\theta^2g^2`;
- :func:`weight_sums`: :math:`\sum_{S_c}|\theta|`, :math:`\sum_{S_c}\theta^2` (over the whole slice, or
  over the producing rows only with :meth:`ChannelLayout.producing`);
- :func:`normalize_scores`: each score divided by the ``mean`` / ``max`` / ``sum`` of the scores of its
  set (a component, ``normalize_by=component``, the latent coupling group being its own component
  ``"latent"``; or a group, ``normalize_by=group``: one layer's hidden width), so that components or
  layers with different gradient scales can be ranked together (``none``: raw scores). A set whose
  statistic is 0 is left unchanged;
- :func:`bias_correction` of the EMA (:math:`1-\beta^n`) and :func:`random_scores`.

Vectorisation (the hot path runs every update): the biases and LayerNorm elements of all groups are
concatenated and each statistic of them is one product; each statistic of the weights is one
``_foreach_mul`` over all weights, then each weight is reduced once per dimension that groups slice
(row sums and/or column sums); all reductions are concatenated, and one ``index_add_`` scatters them onto
the flat channel vector of all
groups (:class:`ChannelLayout`). There is no Python loop over channels or groups per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from pruning.config import NORMALIZATIONS
from pruning.groups import Group, ParamSlice

#: Element-wise statistics of a parameter θ and its gradient g that :meth:`ChannelLayout.channel_sums`
#: sums per channel, as a product of two factors (``None``: the first factor alone); ``tg`` = θ·g.
STATISTICS: dict[str, tuple[str, str | None]] = {
    "g2": ("g", "g"), "tg": ("t", "g"), "t2g2": ("tg", "tg"), "abs": ("|t|", None), "t2": ("t", "t"),
}


class ChannelLayout:
    """The channels of ``groups`` laid end to end in one flat vector, and the plan that reduces
    per-element statistics of the parameters onto it.

    Group ``k`` occupies flat positions ``offsets[k] .. offsets[k] + sizes[k]``. The plan lists every
    parameter with at least one slice that is not a tied copy's (``ParamSlice.tied``) and, for each dimension that slices
    it, a destination channel for every index along that dimension (``num_channels`` = not a channel:
    e.g. the action columns of a first layer whose latent columns form the coupling group). Parameters
    are looked up by ``(module, name)`` on every call, so a replaced parameter is seen (and a changed
    shape is detected: the layout must then be rebuilt, see ``ImportanceTracker.after_pruning``).
    """

    def __init__(self, groups: Sequence[Group], slice_filter: Callable[[ParamSlice], bool] | None = None):
        self.groups = list(groups)
        self._producing: ChannelLayout | None = None
        self.names = [g.name for g in self.groups]
        self.sizes = [g.size for g in self.groups]
        self.num_channels = sum(self.sizes)
        self.offsets = [0]
        for s in self.sizes[:-1]:
            self.offsets.append(self.offsets[-1] + s)
        self.components = list(dict.fromkeys(g.component for g in self.groups))
        comp_id = {c: i for i, c in enumerate(self.components)}
        self.component_index = torch.cat(
            [torch.full((g.size,), comp_id[g.component], dtype=torch.long) for g in self.groups]
        ) if self.groups else torch.zeros(0, dtype=torch.long)
        self.group_index = torch.repeat_interleave(torch.arange(len(self.groups)), torch.tensor(self.sizes,
                                                                                               dtype=torch.long))

        # (module, param_name) -> {dim: destination LongTensor of length shape[dim]}
        plan: dict[tuple[nn.Module, str], dict[int, torch.Tensor]] = {}
        shapes: dict[tuple[nn.Module, str], torch.Size] = {}
        for g, off in zip(self.groups, self.offsets):
            for s in g.slices:
                p = s.param
                if s.tied or (slice_filter is not None and not slice_filter(s)):
                    continue  # tied copies (target networks): never scored
                key = (s.module, s.param_name)
                shapes[key] = p.shape
                dst = plan.setdefault(key, {}).get(s.dim)
                if dst is None:
                    dst = plan[key][s.dim] = torch.full((p.shape[s.dim],), self.num_channels, dtype=torch.long)
                dst[s.offset: s.offset + g.size] = torch.arange(off, off + g.size)
        self._keys = list(plan)
        self._shapes = [shapes[k] for k in self._keys]
        # Parameters sliced along their only dimension (biases, LayerNorm elements: the statistic of an
        # element is its channel's term) are concatenated and reduced together; the others (weights)
        # are reduced per sliced dimension: (dim, dims summed over). Flat positions: vectors first,
        # then every weight reduction, in this order (``_dst``).
        self._vectors = [i for i, k in enumerate(self._keys) if len(shapes[k]) == 1]
        self._weights = [i for i, k in enumerate(self._keys) if len(shapes[k]) != 1]
        self._reduce = [
            [(d, [i for i in range(len(shapes[self._keys[j]])) if i != d]) for d in sorted(plan[self._keys[j]])]
            for j in self._weights
        ]
        dst = [plan[self._keys[j]][0] for j in self._vectors]
        dst += [plan[self._keys[j]][d] for j in self._weights for d in sorted(plan[self._keys[j]])]
        self._dst = torch.cat(dst) if dst else torch.zeros(0, dtype=torch.long)
        self._device: torch.device | None = None

    def producing(self) -> ChannelLayout:
        """The same channels, reduced over their *producing* slices only: rows (and biases) of the
        ``nn.Linear`` s whose outputs are the channels (``dim=0``); LayerNorm elements and consuming
        columns are left out. Built once."""
        if self._producing is None:
            self._producing = ChannelLayout(
                self.groups, lambda s: isinstance(s.module, nn.Linear) and s.dim == 0)
        return self._producing

    def params(self) -> list[torch.Tensor]:
        """Current parameters of the plan (detached unless grad mode is off), checking their shapes are
        those the plan was built for."""
        detach = torch.is_grad_enabled()
        out = []
        for (module, name), shape in zip(self._keys, self._shapes):
            p = getattr(module, name)
            if p.shape != shape:
                raise RuntimeError(
                    f"parameter {name!r} of {type(module).__name__} changed shape {tuple(shape)} -> "
                    f"{tuple(p.shape)}: the model was pruned; call tracker.after_pruning(keep)"
                )
            out.append(p.detach() if detach else p)
        return out

    def grads(self, params: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Current ``.grad`` of the plan's parameters (zeros where a gradient is ``None``)."""
        if params is None:
            params = self.params()
        out = []
        for (module, name), p in zip(self._keys, params):
            g = getattr(module, name).grad
            out.append(torch.zeros_like(p) if g is None else g)
        return out

    def channel_sums(self, stats: Sequence[str]) -> torch.Tensor:
        """Per-channel sums of element-wise statistics of the parameters (and their ``.grad``).

        ``stats``: names of :data:`STATISTICS` (e.g. ``["g2", "tg"]``). Returns ``(len(stats),
        num_channels)`` float64: entry ``[i, c] = sum_{S_c}`` of statistic ``i``.

        Cost (every tracked update runs this): the biases and LayerNorm elements are concatenated and
        their statistics formed in one product each; the weights' products are one ``_foreach_mul`` per
        statistic over all weights, then one ``sum`` per weight and sliced dimension; one ``index_add_``
        scatters everything onto the channels. (Measured on the CPU preset, 56 parameters: 0.76-0.80 vs 1.12-1.21
        ms for a per-parameter ``vecdot`` per statistic and dimension, the same numbers bit for bit.)
        """
        unknown = [s for s in stats if s not in STATISTICS]
        if unknown:
            raise ValueError(f"unknown statistic(s) {unknown}; known: {sorted(STATISTICS)}")
        params = self.params()
        needs_grad = any("g" in STATISTICS[s] or "tg" in STATISTICS[s] for s in stats)
        grads = self.grads(params) if needs_grad else None
        if not self._keys:
            return torch.zeros(len(stats), self.num_channels, dtype=torch.float64)

        def factors(idx: list[int], gather, mul, absolute):
            """``get(name)``: factor ``name`` of the parameters ``idx``, built on first use and kept; ``gather``
            turns the per-parameter tensors into the operand (``torch.cat``: one vector; ``list``: a list for
            the ``_foreach`` ops), ``mul`` / ``absolute`` act on it."""
            base = {"t": lambda: gather([params[i] for i in idx]), "g": lambda: gather([grads[i] for i in idx]),
                    "tg": lambda: mul(get("t"), get("g")), "|t|": lambda: absolute(get("t"))}
            cache: dict[str, object] = {}

            def get(name: str):
                if name not in cache:
                    cache[name] = base[name]()
                return cache[name]
            return get

        rows: list[list[torch.Tensor]] = [[] for _ in stats]
        kinds = ((self._vectors, torch.cat, torch.mul, torch.abs, None),  # biases, LayerNorm: no reduction
                 (self._weights, list, torch._foreach_mul, torch._foreach_abs, self._reduce))
        for idx, gather, mul, absolute, reduce in kinds:
            if not idx:
                continue
            get = factors(idx, gather, mul, absolute)
            for i, s in enumerate(stats):
                a, b = STATISTICS[s]
                prod = get(a) if b is None else mul(get(a), get(b))
                if reduce is None:
                    rows[i].append(prod)
                else:
                    rows[i].extend(x.sum(dim=other) for x, reductions in zip(prod, reduce) for _, other in reductions)
        flat = torch.stack([torch.cat(r) for r in rows])  # (k, positions), positions ordered like _dst
        if self._device != flat.device:
            self._dst = self._dst.to(flat.device)
            self._device = flat.device
        out = torch.zeros(len(stats), self.num_channels + 1, dtype=torch.float64, device=flat.device)
        out.index_add_(1, self._dst, flat.to(torch.float64))
        return out[:, : self.num_channels]

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat per-channel vector -> ``{group name: 1-D tensor of the group's size}``."""
        return dict(zip(self.names, flat.split(self.sizes)))


def gradient_sums(layout: ChannelLayout, stats: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per-channel sums of the requested gradient statistics (``g2``, ``tg``, ``t2g2``) from ``.grad``."""
    names = [s for s in ("g2", "tg", "t2g2") if s in stats]
    with torch.no_grad():
        sums = layout.channel_sums(names)
    return dict(zip(names, sums))


def weight_sums(layout: ChannelLayout, stats: Sequence[str] = ("abs", "t2")) -> dict[str, torch.Tensor]:
    """Per-channel ``abs`` = sum |theta| and/or ``t2`` = sum theta^2 of the current (trainable) weights."""
    names = [s for s in ("abs", "t2") if s in stats]
    with torch.no_grad():
        sums = layout.channel_sums(names)
    return dict(zip(names, sums))


def normalize_scores(scores: torch.Tensor, index: torch.Tensor, how: str) -> torch.Tensor:
    """Divide each channel's score by the ``how`` statistic (mean|max|sum) of the scores of its set.

    ``index[c]`` is the set (component or group id, :class:`ChannelLayout`) of flat channel ``c``. A set
    whose statistic is 0 keeps its scores; ``how="none"`` returns ``scores`` unchanged.
    """
    if how not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {how!r}")
    if how == "none" or scores.numel() == 0:
        return scores
    idx = index.to(scores.device)
    n = int(idx.max()) + 1
    if how == "max":
        stat = torch.full((n,), -torch.inf, dtype=scores.dtype, device=scores.device)
        stat = stat.scatter_reduce(0, idx, scores, reduce="amax")
    else:
        stat = torch.zeros(n, dtype=scores.dtype, device=scores.device).index_add_(0, idx, scores)
        if how == "mean":
            stat = stat / torch.bincount(idx, minlength=n).to(scores.dtype)
    stat = torch.where(stat == 0, torch.ones_like(stat), stat)
    return scores / stat[idx]


def bias_correction(beta: float, n: int) -> float:
    """``1 - beta**n``: the sum of the EMA weights after ``n`` steps (0 for ``n = 0``)."""
    return 1.0 - beta**n


def random_scores(num_channels: int, seed: int) -> torch.Tensor:
    """``U(0, 1)`` float64 scores from a generator seeded with ``seed`` (reproducible)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.rand(num_channels, generator=gen, dtype=torch.float64)
