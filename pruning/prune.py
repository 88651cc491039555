"""Structural pruning: physically remove channels of groups (see :mod:`pruning.groups`).

- :func:`apply_pruning` takes the channels to *keep* per group and replaces every touched ``nn.Linear`` /
  ``nn.LayerNorm`` parameter by a new, smaller ``nn.Parameter`` (and updates ``in_features``,
  ``out_features``, ``normalized_shape``), so the FLOPs really drop. Tied twins (target networks) are
  sliced with the same indices. In every given optimiser the old parameter objects are replaced by the
  new ones in ``param_groups`` and their state is sliced: every state tensor with the parameter's shape
  (Adam's ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``; SGD's ``momentum_buffer``) is index-selected
  like the parameter, scalars (``step``) are kept, so training continues as if the removed channels had
  never existed. A state tensor of any other shape (Adafactor's factored ``row_var`` / ``col_var``: means
  over the removed channels too) cannot be sliced exactly: :func:`apply_pruning` then refuses before
  modifying anything (rebuild that optimiser after pruning instead). A pending ``.grad`` is sliced too.
- :func:`select_channels` ranks channels by score and decides which to keep; :func:`prune` = select +
  apply.

Selection rules (:func:`select_channels`):

- ``ratio`` is the fraction of channels of the scored groups to remove, in ``[0, 1)``;
  ``scope="global"`` ranks all scored groups together, ``"per_component"`` removes ``ratio`` (or
  ``per_component_ratios[component]``) of each component's channels, ranked within the component, and
  ``"per_group"`` removes ``ratio`` of each group (uniform layer-wise pruning).
- Units: a group with ``unit > 1`` (the SimNorm latent) is pruned in whole units; a unit's score is the
  sum of its channels' scores. Ensembles: the ``k``-th removal of a stacked ensemble's layer removes
  the ``k``-th lowest channel of every member (indices chosen per member, counts equal); its score is the
  sum over members. When candidates of different sizes compete (global / per-component ranking), they
  are compared by score *per removed channel* (sum / number of channels), which within one group orders
  exactly like the sum.
- ``min_channels`` (per group, >= 1) is never violated (for unit groups: at least
  ``ceil(min_channels / unit)`` units stay). At most ``floor(ratio * channels)`` channels are removed:
  candidates are taken greedily in score order, and one that removes more channels than the budget has
  left (a unit, or one channel of every member of an ensemble) closes its group while smaller later
  candidates may still fill the rest. With groups of unit 1 only, exactly ``floor(ratio * channels)`` are
  removed (if ``min_channels`` allows); with units or ensembles the amount can fall short of it (it is
  not the largest fillable amount, a knapsack problem).

After pruning, the old groups are stale (sizes and offsets changed): rebuild them with
:func:`pruning.groups.build_groups` / :func:`pruning.groups.model_groups`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from pruning.cost import LinearCost
from pruning.groups import Group, model_groups, plain_parameter

SCOPES = ("global", "per_component", "per_group")


# ---------------------------------------------------------------------------------------- apply


def _as_index(name: str, idx: torch.Tensor | Sequence[int], g: Group) -> torch.Tensor:
    t = torch.as_tensor(idx)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool or t.dim() > 1:
        raise ValueError(f"group {name!r}: kept indices must be a 1-D integer tensor, got {t.dtype} {tuple(t.shape)}")
    t = t.detach().to("cpu", torch.long).flatten()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= g.size):
        raise ValueError(f"group {name!r}: kept indices must lie in [0, {g.size}), got {t.min()}..{t.max()}")
    t = torch.sort(t).values
    if t.numel() > 1 and bool((t[1:] == t[:-1]).any()):
        raise ValueError(f"group {name!r}: kept indices contain duplicates")
    return t


def _check_min_channels(min_channels: int) -> None:
    if int(min_channels) != min_channels or min_channels < 1:
        raise ValueError(f"min_channels must be an integer >= 1, got {min_channels!r}")


def _groups_by_name(groups: Sequence[Group], names: Iterable[str], what: str) -> dict[str, Group]:
    """``groups`` by name; ``ValueError`` naming any of ``names`` that is not a group."""
    by_name = {g.name: g for g in groups}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"{what}unknown group(s) {unknown}; known groups: {sorted(by_name)}")
    return by_name


def _validate_keep(
    keep: Mapping[str, torch.Tensor | Sequence[int]], groups: Sequence[Group], min_channels: int
) -> dict[str, torch.Tensor]:
    _check_min_channels(min_channels)
    by_name = _groups_by_name(groups, keep, "")
    out: dict[str, torch.Tensor] = {}
    for name, idx in keep.items():
        g = by_name[name]
        t = _as_index(name, idx, g)
        if t.numel() < min(min_channels, g.size):
            raise ValueError(f"group {name!r}: keeping {t.numel()} channels violates min_channels={min_channels}")
        if g.unit > 1:
            counts = torch.bincount(t // g.unit, minlength=g.num_units)
            if bool(((counts != 0) & (counts != g.unit)).any()):
                raise ValueError(f"group {name!r}: channels must be kept in whole units of {g.unit}")
        out[name] = t
    # Members of a stacked ensemble must keep the same width (an absent member keeps all its channels).
    ensembles: dict[str, list[Group]] = {}
    for g in groups:
        if g.ensemble is not None:
            ensembles.setdefault(g.ensemble, []).append(g)
    for key, members in ensembles.items():
        counts = {g.name: (out[g.name].numel() if g.name in out else g.size) for g in members}
        if len(set(counts.values())) > 1:
            raise ValueError(f"ensemble {key!r}: every member must keep the same number of channels, got {counts}")
    return out


def _replace_optimizer_state(
    optimizers: Iterable[torch.optim.Optimizer],
    replaced: dict[nn.Parameter, tuple[nn.Parameter, dict[int, torch.Tensor]]],
) -> None:
    for opt in optimizers:
        for pg in opt.param_groups:
            pg["params"] = [replaced[p][0] if p in replaced else p for p in pg["params"]]
        for old, (new, kept) in replaced.items():
            if old not in opt.state:
                continue
            state = opt.state.pop(old)
            opt.state[new] = {k: _select(v, kept) if _like(v, old) else v for k, v in state.items()}


def _like(v: object, p: torch.Tensor) -> bool:
    return isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape == p.shape


def _check_optimizer_state(optimizers: Sequence[torch.optim.Optimizer], params: Iterable[torch.Tensor]) -> None:
    """``ValueError`` (one line) if an optimiser holds state of a parameter to be pruned that is neither a scalar
    nor of the parameter's shape: it could not be sliced exactly (see the module doc)."""
    params = list(params)
    for opt in optimizers:
        for p in params:
            for k, v in opt.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p.shape:
                    raise ValueError(
                        f"{type(opt).__name__} state {k!r} of shape {tuple(v.shape)} for a parameter of shape "
                        f"{tuple(p.shape)} is not element-wise and cannot be sliced exactly; leave this optimiser "
                        f"out of optimizers=... and rebuild it after pruning")


def _check_params(removed: Iterable[tuple[nn.Module, str]]) -> None:
    """``ValueError`` (one line) unless every parameter to slice is a registered ``nn.Parameter`` of its module
    (:func:`pruning.groups.plain_parameter`: a computed weight cannot be replaced; trying would fail halfway)."""
    for module, name in removed:
        if not plain_parameter(module, name):
            raise ValueError(f"{type(module).__name__}.{name} is not a plain parameter of its module (parametrized, "
                             f"spectral_norm or weight_norm?); it cannot be pruned by slicing")


def _select(t: torch.Tensor, kept: dict[int, torch.Tensor]) -> torch.Tensor:
    for dim, idx in kept.items():
        t = t.index_select(dim, idx.to(t.device))
    return t.contiguous()


@torch.no_grad()
def apply_pruning(
    keep: Mapping[str, torch.Tensor | Sequence[int]],
    groups: Sequence[Group],
    optimizers: Iterable[torch.optim.Optimizer] = (),
    min_channels: int = 1,
) -> None:
    """Keep only ``keep[name]`` channels (sorted) of each named group; groups not named are untouched.

    Every parameter touched by a pruned group is replaced by a new smaller ``nn.Parameter`` (same dtype,
    device and ``requires_grad``); the optimisers' ``param_groups`` and state follow (see module doc).
    Raises ``ValueError`` (before anything is modified) for an unknown group, indices out of range or
    duplicated, fewer than ``min_channels`` kept, partial units, unequal widths across the members
    of a stacked ensemble, a parameter that is not a plain ``nn.Parameter`` of its module, or optimiser
    state that cannot be sliced exactly.
    """
    optimizers = list(optimizers)
    kept_idx = _validate_keep(keep, groups, min_channels)
    by_name = {g.name: g for g in groups}

    # Removed positions per (module, parameter, dim), in the parameter's own coordinates.
    removed: dict[tuple[nn.Module, str], dict[int, list[torch.Tensor]]] = {}
    for name, idx in kept_idx.items():
        g = by_name[name]
        mask = torch.ones(g.size, dtype=torch.bool)
        mask[idx] = False
        drop = mask.nonzero().flatten()
        if drop.numel() == 0:
            continue
        for s in g.slices:
            removed.setdefault((s.module, s.param_name), {}).setdefault(s.dim, []).append(drop + s.offset)

    _check_params(removed)
    _check_optimizer_state(optimizers, (getattr(m, n) for m, n in removed))
    replaced: dict[nn.Parameter, tuple[nn.Parameter, dict[int, torch.Tensor]]] = {}
    touched: list[nn.Module] = []
    for (module, pname), per_dim in removed.items():
        old = getattr(module, pname)
        kept: dict[int, torch.Tensor] = {}
        for dim, drops in sorted(per_dim.items()):
            mask = torch.ones(old.shape[dim], dtype=torch.bool)
            mask[torch.cat(drops)] = False
            kept[dim] = mask.nonzero().flatten().to(old.device)
        new = nn.Parameter(_select(old.detach(), kept), requires_grad=old.requires_grad)
        if old.grad is not None:
            new.grad = _select(old.grad, kept)
        setattr(module, pname, new)
        replaced[old] = (new, kept)
        if module not in touched:
            touched.append(module)

    for m in touched:
        if isinstance(m, nn.Linear):
            m.out_features, m.in_features = m.weight.shape
        elif isinstance(m, nn.LayerNorm):
            m.normalized_shape = (m.weight.shape[0],)
    _replace_optimizer_state(optimizers, replaced)


# ---------------------------------------------------------------------------------------- select


def is_ratio(value: object) -> bool:
    """A pruning ratio: a finite real number (not a bool) in ``[0, 1)``. The one check of the package
    (``prune``, the schedules, the prune job), each caller wording its own error."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
            and 0 <= value < 1)


def _check_ratio(value: float, what: str) -> float:
    if not is_ratio(value):
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r}")
    return float(value)


class _Bundle:
    """Groups removed jointly: one group, or the same layer of every member of a stacked ensemble."""

    def __init__(self, members: list[Group], scores: Mapping[str, torch.Tensor], min_channels: int):
        self.members = members
        g = members[0]
        self.component, self.unit = g.component, g.unit
        self.channels = sum(m.size for m in members)
        self.weight = g.unit * len(members)  # channels removed by one candidate
        keep_units = max(1, math.ceil(min_channels / g.unit))
        self.max_remove = max(0, g.num_units - keep_units)
        unit_scores = [scores[m.name].reshape(m.num_units, m.unit).sum(1) for m in members]
        sorted_scores, self.order = zip(*(torch.sort(s, stable=True) for s in unit_scores))
        # k-th candidate: the k-th lowest unit of every member; score per removed channel.
        self.candidates = (torch.stack(sorted_scores).sum(0) / self.weight)[: self.max_remove].tolist()
        self.removed = 0

    def kept(self) -> dict[str, torch.Tensor]:
        out = {}
        for m, order in zip(self.members, self.order):
            units = torch.sort(order[self.removed:]).values
            out[m.name] = (units[:, None] * m.unit + torch.arange(m.unit)).flatten()
        return out


def _fill(bundles: list[_Bundle], ratio: float) -> None:
    """Greedy: remove the lowest-scoring candidates until ``floor(ratio * channels)`` is reached."""
    budget = math.floor(ratio * sum(b.channels for b in bundles) + 1e-9)
    cands = sorted((s, i, k) for i, b in enumerate(bundles) for k, s in enumerate(b.candidates))
    closed: set[int] = set()
    for _, i, k in cands:
        b = bundles[i]
        if budget <= 0:
            break
        if i in closed or k != b.removed:
            continue
        if b.weight > budget:
            closed.add(i)
            continue
        b.removed += 1
        budget -= b.weight


def _fill_cost(bundles: list[_Bundle], ratio: float, cost: LinearCost, tolerance: float) -> None:
    """Greedy in importance order until ``cost`` has fallen by ``ratio`` of its dense value.

    A candidate that would overshoot the target by more than ``tolerance`` (a fraction of the dense
    cost) is skipped and its bundle closed, so the result lands in ``[target - tolerance, target]`` whenever
    cheap enough candidates remain. Closing is a heuristic that keeps the fill one pass: removals elsewhere
    only lower a channel's price, so a later candidate of a closed bundle could still have fitted (then
    another bundle's candidate is taken in its place, still within the tolerance).
    """
    target = (1.0 - ratio) * cost.dense
    cands = sorted((s, i, k) for i, b in enumerate(bundles) for k, s in enumerate(b.candidates))
    closed: set[int] = set()
    for _, i, k in cands:
        if cost.total <= target:
            break
        b = bundles[i]
        if i in closed or k != b.removed:
            continue
        names = [m.name for m in b.members]
        if cost.total - cost.price(names, b.unit) < target - tolerance * cost.dense:
            closed.add(i)
            continue
        cost.remove(names, b.unit)
        b.removed += 1


def _clean_scores(groups: Sequence[Group], scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``scores`` as flat float64 CPU tensors, checked against ``groups`` (names, sizes, finite)."""
    by_name = _groups_by_name(groups, scores, "scores for ")
    clean: dict[str, torch.Tensor] = {}
    for name, s in scores.items():
        t = torch.as_tensor(s).detach().to("cpu", torch.float64).flatten()
        if t.numel() != by_name[name].size:
            raise ValueError(f"group {name!r}: expected {by_name[name].size} scores, got {t.numel()}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"group {name!r}: scores must be finite")
        clean[name] = t
    return clean


def _check_component_ratios(groups: Sequence[Group], per_component_ratios: Mapping[str, float] | None,
                            scope: str) -> dict[str, float]:
    """``per_component_ratios`` as a dict, checked (known components, valid ratios, the right scope)."""
    components = {g.component for g in groups}
    ratios = dict(per_component_ratios or {})
    bad = [c for c in ratios if c not in components]
    if bad:
        raise ValueError(f"per_component_ratios: unknown component(s) {bad}; known: {sorted(components)}")
    if ratios and scope != "per_component":
        raise ValueError("per_component_ratios needs scope='per_component'")
    for c, r in ratios.items():
        _check_ratio(r, f"per_component_ratios[{c!r}]")
    return ratios


def select_channels(
    groups: Sequence[Group],
    scores: Mapping[str, torch.Tensor],
    ratio: float,
    scope: str = "global",
    per_component_ratios: Mapping[str, float] | None = None,
    min_channels: int = 1,
    cost: LinearCost | None = None,
    tolerance: float = 0.005,
) -> dict[str, torch.Tensor]:
    """Kept channel indices (sorted ``LongTensor``) for every scored group; higher score = more important.

    Only the groups named in ``scores`` take part (the members of an ensemble all or none). See the
    module docstring for the rules. With ``cost`` (a fresh :class:`~pruning.cost.LinearCost` of these
    groups; it is updated in place) ``ratio`` is the fraction of that cost to remove instead of the
    fraction of channels (``scope="global"`` only; see :func:`_fill_cost` for ``tolerance``). Raises
    ``ValueError`` for a bad ``ratio``, ``scope``, component, group name, score shape or non-finite score.
    """
    ratio = _check_ratio(ratio, "ratio")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if cost is not None and (scope != "global" or per_component_ratios):
        raise ValueError(f"a cost budget ranks all groups together: scope must be 'global', got {scope!r}")
    _check_min_channels(min_channels)
    clean = _clean_scores(groups, scores)
    ratios = _check_component_ratios(groups, per_component_ratios, scope)

    bundles: list[_Bundle] = []
    seen: set[str] = set()
    for g in groups:
        if g.name not in clean or g.name in seen:
            continue
        members = [g] if g.ensemble is None else [m for m in groups if m.ensemble == g.ensemble]
        missing = [m.name for m in members if m.name not in clean]
        if missing:
            raise ValueError(f"ensemble {g.ensemble!r}: scores missing for members {missing} (score all or none)")
        seen.update(m.name for m in members)
        bundles.append(_Bundle(members, clean, int(min_channels)))

    if cost is not None:
        _fill_cost(bundles, ratio, cost, tolerance)
    elif scope == "global":
        _fill(bundles, ratio)
    elif scope == "per_group":
        for b in bundles:
            _fill([b], ratio)
    else:
        for c in dict.fromkeys(b.component for b in bundles):
            _fill([b for b in bundles if b.component == c], ratios.get(c, ratio))
    return {name: idx for b in bundles for name, idx in b.kept().items()}


def prune(
    target: nn.Module | Sequence[Group],
    scores: Mapping[str, torch.Tensor],
    ratio: float,
    scope: str = "global",
    per_component_ratios: Mapping[str, float] | None = None,
    min_channels: int = 1,
    optimizers: Iterable[torch.optim.Optimizer] = (),
    prune_latent: bool = True,
    cost_rows: Mapping[nn.Linear, float] | None = None,
) -> dict[str, torch.Tensor]:
    """Remove the lowest-scoring channels of ``target`` for real; returns the kept indices per group.

    ``target`` is a list of groups, or a model declaring ``components`` (groups built with
    :func:`pruning.groups.model_groups`, ``prune_latent`` passed on). ``scores`` maps group names to
    per-channel scores. With ``cost_rows`` (``nn.Linear`` -> rows per unit of work, e.g.
    :func:`pruning.study.cost_model.plan_rows`) ``ratio`` is the fraction of those FLOPs to remove. See
    :func:`select_channels` and :func:`apply_pruning`.
    """
    groups = model_groups(target, prune_latent) if isinstance(target, nn.Module) else list(target)
    cost = LinearCost(groups, cost_rows) if cost_rows is not None else None
    keep = select_channels(groups, scores, ratio, scope, per_component_ratios, min_channels, cost)
    apply_pruning(keep, groups, optimizers, min_channels)
    return keep
