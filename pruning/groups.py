"""Prunable groups of a model that declares its components.

A **group** is a set of channels together with every parameter slice that must be removed when one of
its channels is removed. Channel ``i`` of a hidden layer of an MLP touches row ``i`` of ``Linear_k``
(weight and bias), element ``i`` of the ``LayerNorm`` that follows (weight and bias) and column ``i`` of
``Linear_{k+1}``. A group records these as :class:`ParamSlice` ``(module, param_name, dim, offset)``:
channel ``i`` is index ``offset + i`` along ``dim`` of ``module.<param_name>``.

Two kinds of groups:

- ``hidden`` (component-specific): found automatically by walking every ``nn.Sequential`` of a
  component. A ``Linear`` followed, through any number of ``LayerNorm`` (1-D, affine) and elementwise
  modules (activations, ``Dropout``, ``Identity``), by another ``Linear`` of the
  same ``Sequential`` forms a group (a model adds its own elementwise types, e.g. a Mish of its own, with
  ``elementwise_modules()``). Anything else in between (e.g. ``SimNorm``, a reshape, a nested
  container) stops the walk and no group is formed: the search is conservative and never guesses, and
  a ``Linear`` whose width is thus left unprunable (and is not declared by a coupling, nor the output
  layer of its ``Sequential``) is reported with a warning naming it. Only plain modules are sliced: a
  ``Linear`` whose weight is computed (``torch.nn.utils.parametrize``, ``spectral_norm``,
  ``weight_norm``) and a ``LayerNorm`` without affine parameters also stop the walk (their weight, or
  their ``normalized_shape``, cannot be sliced). A module with parameters used twice in one
  ``Sequential`` is refused (``ValueError``): its width cannot be pruned per use.
  An ``nn.ModuleList`` of structurally identical ``Sequential`` s (e.g. ``QEnsemble.members``) gives one
  group per member per layer, and these groups share an ``ensemble`` key (``"qs/*/4"``): the members of
  a stacked ensemble must keep the same width (indices still chosen per member).
- ``coupling`` (inter-component): a dimension shared across components, declared by the model's
  ``couplings()`` as plain data — a :class:`Coupling` or a mapping with its fields (producers whose
  output rows make the dimension, consumers whose input columns at a given offset read it, ``unit``
  channels removed together). The model needs no import of this package for that: the TD-MPC world
  model of this repository declares its latent this way (``WorldModel.couplings``).

Tied modules (``tied=[(online, copy)]``, e.g. the target Q-ensemble) receive the same slices as their
online twin (matched by qualified module name), so they are pruned with exactly the same indices.

Naming: ``"<component>/<path of the Linear inside the component>"`` with ``/`` separators, where the
attribute name of a single-child wrapper is elided (``qs.members.1.4`` -> ``"qs/1/4"``); coupling
groups are named after the coupling (``"latent"``), and their ``component`` is the coupling's name too,
so that per-component ratios and normalisation can address them.

Why not Torch-Pruning: the groups are built from our own small graph of *declared* components instead
of Torch-Pruning's traced ``DependencyGraph``. Torch-Pruning traces one forward function and does not
know that the stacked (``torch.stack`` + ``baddbmm``) Q-ensemble needs equal widths per member, that the
target network (never in the traced graph) must be sliced identically, nor how to slice optimiser
state (Adam moments); it also cannot trace across the separate calls of the five components (the
latent coupling). On plain ``nn.Sequential`` MLPs the groups found here equal those of Torch-Pruning
(checked in ``tests/test_pruning_groups.py`` with Torch-Pruning as an oracle). This module knows no
particular model.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn as nn

#: Modules that act elementwise on the channel dimension (a channel can be removed through them).
ELEMENTWISE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Identity, nn.Dropout, nn.AlphaDropout, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU,
    nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Tanhshrink, nn.LogSigmoid,
)


class ParamSlice(NamedTuple):
    """Channel ``i`` of a group is index ``offset + i`` along ``dim`` of ``getattr(module, param_name)``.

    ``tied``: the slice belongs to a tied copy (``shape_tied()``, e.g. a target network): it is pruned with
    its online twin but never scored (its parameters are not trained by the loss)."""

    module: nn.Module
    param_name: str
    dim: int
    offset: int
    tied: bool = False

    @property
    def param(self) -> torch.Tensor:
        return getattr(self.module, self.param_name)


@dataclass(eq=False)
class Group:
    """A prunable set of ``size`` channels and the parameter slices they touch.

    ``unit`` channels are removed together (``size`` is a multiple of it). Groups with the same
    ``ensemble`` key (members of a stacked ensemble, same layer) must keep the same number of channels.
    """

    name: str
    component: str
    kind: str
    size: int
    unit: int = 1
    slices: list[ParamSlice] = field(default_factory=list)
    ensemble: str | None = None

    @property
    def num_units(self) -> int:
        return self.size // self.unit

    def channel_views(self, grad: bool = False) -> Iterator[torch.Tensor]:
        """For every slice, its parameter (or its ``.grad``) viewed as ``(size, -1)``: row ``i`` = channel ``i``.

        Slices whose gradient is ``None`` are skipped when ``grad=True``.
        """
        for s in self.slices:
            t = s.param.grad if grad else s.param.detach()
            if t is None:
                continue
            yield t.narrow(s.dim, s.offset, self.size).movedim(s.dim, 0).reshape(self.size, -1)

    def __repr__(self) -> str:
        return (f"Group(name={self.name!r}, component={self.component!r}, kind={self.kind!r}, "
                f"size={self.size}, unit={self.unit}, slices={len(self.slices)}, ensemble={self.ensemble!r})")


@dataclass(eq=False)
class Coupling:
    """A dimension of ``size`` channels shared by several components.

    ``producers``: ``nn.Linear`` (rows) and ``nn.LayerNorm`` (elements) whose outputs are the dimension.
    ``consumers``: ``(nn.Linear, offset)``: the dimension is read by input columns ``offset..offset+size``.
    ``unit``: channels removed together. ``component``: name used for per-component ranking (default
    ``name``).
    """

    name: str
    size: int
    producers: list[nn.Module]
    consumers: list[tuple[nn.Module, int]]
    unit: int = 1
    component: str | None = None


def is_elementwise(module: nn.Module, extra: tuple[type[nn.Module], ...] = ()) -> bool:
    """Whether ``module`` maps each channel independently (so a channel can be removed through it):
    one of :data:`ELEMENTWISE_TYPES` or of the model's own ``extra`` types."""
    return isinstance(module, ELEMENTWISE_TYPES + tuple(extra))


def plain_parameter(module: nn.Module, name: str) -> bool:
    """Whether ``module.<name>`` is a registered ``nn.Parameter`` of the module, so it can be sliced: not computed
    by a parametrization (``torch.nn.utils.parametrize``) nor by the old ``spectral_norm`` / ``weight_norm``
    (the attribute is then a plain tensor recomputed before every call)."""
    from torch.nn.utils import parametrize

    return not parametrize.is_parametrized(module, name) and isinstance(module._parameters.get(name), nn.Parameter)


def _plain_linear(module: nn.Module) -> bool:
    """An ``nn.Linear`` whose ``weight`` (and ``bias``) are its own parameters (:func:`plain_parameter`)."""
    return (isinstance(module, nn.Linear) and plain_parameter(module, "weight")
            and (module.bias is None or plain_parameter(module, "bias")))


def _linear_slices(linear: nn.Linear, dim: int, offset: int = 0) -> list[ParamSlice]:
    out = [ParamSlice(linear, "weight", dim, offset)]
    if dim == 0 and linear.bias is not None:
        out.append(ParamSlice(linear, "bias", 0, offset))
    return out


def _norm_slices(norm: nn.LayerNorm) -> list[ParamSlice]:
    return [ParamSlice(norm, n, 0, 0) for n in ("weight", "bias") if getattr(norm, n, None) is not None]


def _is_affine_norm(module: nn.Module, width: int) -> bool:
    return (isinstance(module, nn.LayerNorm) and tuple(module.normalized_shape) == (width,)
            and isinstance(module.weight, nn.Parameter))


def _layers(seq: nn.Sequential, where: str) -> list[nn.Module]:
    """The layers of ``seq`` in order, a module listed at each position it is used (``children()`` would list
    it once and shift every later index). A module with parameters used twice is refused: pruning its width
    for one use would change the other."""
    layers = list(seq)
    seen: dict[int, int] = {}
    for i, m in enumerate(layers):
        if next(m.parameters(recurse=True), None) is None:
            continue  # a stateless activation may be reused
        if id(m) in seen:
            raise ValueError(f"{where}: layer {i} ({type(m).__name__}) is the same module as layer {seen[id(m)]}; "
                             f"a module with parameters used twice in one Sequential cannot be pruned per use "
                             f"(use two modules, or leave this Sequential out of the components)")
        seen[id(m)] = i
    return layers


def _same_structure(nets: Sequence[nn.Module]) -> bool:
    """Whether ``nets`` are ``Sequential`` s with the same layer types and parameter shapes."""
    if len(nets) < 2 or not all(isinstance(n, nn.Sequential) for n in nets):
        return False
    ref = [(type(m), tuple((k, tuple(p.shape)) for k, p in m.named_parameters())) for m in nets[0]]
    return all(
        [(type(m), tuple((k, tuple(p.shape)) for k, p in m.named_parameters())) for m in n] == ref
        for n in nets[1:]
    )


def _chains(module: nn.Module, path: list[str], ens: int | None) -> Iterator[tuple[list[str], nn.Sequential, int | None]]:
    """Yield ``(path, sequential, ensemble_position)`` for every ``nn.Sequential`` under ``module``.

    ``ensemble_position`` is the index in ``path`` of the member index of a stacked ensemble, if any.
    """
    if isinstance(module, nn.Sequential):
        yield path, module, ens
        for name, child in module.named_children():
            if not isinstance(child, nn.Sequential):
                yield from _chains_inside(child, [*path, name], ens)
            else:
                yield from _chains(child, [*path, name], ens)
        return
    yield from _chains_inside(module, path, ens)


def _chains_inside(module: nn.Module, path: list[str], ens: int | None) -> Iterator[tuple[list[str], nn.Sequential, int | None]]:
    children = list(module.named_children())
    stacked = isinstance(module, nn.ModuleList) and ens is None and _same_structure([c for _, c in children])
    for name, child in children:
        elide = len(children) == 1 and not name.isdigit()
        sub = path if elide else [*path, name]
        yield from _chains(child, sub, len(path) if stacked else ens)


def _hidden_groups(component: str, module: nn.Module, elementwise: tuple[type[nn.Module], ...] = ()) -> list[Group]:
    groups = []
    for path, seq, ens in _chains(module, [], None):
        layers = _layers(seq, f"component {component!r}: {'/'.join([component, *path])}")
        for i, lin in enumerate(layers):
            if not _plain_linear(lin):
                continue
            width = lin.out_features
            slices = _linear_slices(lin, 0)
            found = False
            for nxt in layers[i + 1:]:
                if isinstance(nxt, nn.Linear):
                    if nxt.in_features == width and _plain_linear(nxt):
                        slices += _linear_slices(nxt, 1)
                        found = True
                    break
                if _is_affine_norm(nxt, width):
                    slices += _norm_slices(nxt)
                elif not is_elementwise(nxt, elementwise):
                    break
            if not found:
                continue
            segs = [*path, str(i)]
            key = None
            if ens is not None:
                key = "/".join([component, *segs[:ens], "*", *segs[ens + 1:]])
            groups.append(Group("/".join([component, *segs]), component, "hidden", width, 1, slices, key))
    return groups


def _coupling_group(c: Coupling) -> Group:
    if c.size <= 0 or c.unit <= 0 or c.size % c.unit:
        raise ValueError(f"coupling {c.name!r}: size {c.size} must be a positive multiple of unit {c.unit}")
    slices: list[ParamSlice] = []
    for p in c.producers:
        if _plain_linear(p) and p.out_features == c.size:
            slices += _linear_slices(p, 0)
        elif _is_affine_norm(p, c.size):
            slices += _norm_slices(p)
        else:
            raise ValueError(
                f"coupling {c.name!r}: producer {p!r} must be an nn.Linear with out_features={c.size} "
                f"(not parametrized) or an affine 1-D nn.LayerNorm of that width"
            )
    for m, offset in c.consumers:
        if not _plain_linear(m) or offset < 0 or offset + c.size > m.in_features:
            raise ValueError(
                f"coupling {c.name!r}: consumer {m!r} must be an nn.Linear (not parametrized) with columns "
                f"{offset}..{offset + c.size} inside its in_features"
            )
        slices += _linear_slices(m, 1, offset)
    return Group(c.name, c.component or c.name, "coupling", c.size, c.unit, slices)


def _tied_map(tied: Sequence[tuple[nn.Module, nn.Module]]) -> dict[nn.Module, list[nn.Module]]:
    twins: dict[nn.Module, list[nn.Module]] = {}
    for online, copy in tied:
        copies = dict(copy.named_modules())
        extra = sorted(set(copies) - {n for n, _ in online.named_modules()})
        if extra:
            raise ValueError(f"tied copy has module(s) {extra} that its online twin lacks")
        for name, m in online.named_modules():
            t = copies.get(name)
            if t is None or type(t) is not type(m):
                raise ValueError(f"tied module has no twin of type {type(m).__name__} at {name!r}")
            mine = [(pn, tuple(p.shape)) for pn, p in m.named_parameters(recurse=False)]
            theirs = [(qn, tuple(q.shape)) for qn, q in t.named_parameters(recurse=False)]
            if mine != theirs:  # every parameter, not only the common ones (a twin without a bias)
                raise ValueError(f"tied module {name!r}: parameters differ, online {mine} vs copy {theirs}")
            twins.setdefault(m, []).append(t)
    return twins


def _check_disjoint(groups: Sequence[Group]) -> None:
    """No index of any parameter may belong to two groups, and slices must lie inside the parameter."""
    spans: dict[tuple[int, str, int], list[tuple[int, int, str]]] = {}
    for g in groups:
        for s in g.slices:
            extent = s.param.shape[s.dim]
            if s.offset + g.size > extent:
                raise ValueError(f"group {g.name!r}: slice {s.param_name}[{s.offset}:{s.offset + g.size}] "
                                 f"along dim {s.dim} exceeds the parameter's {extent}")
            spans.setdefault((id(s.module), s.param_name, s.dim), []).append((s.offset, s.offset + g.size, g.name))
    for items in spans.values():
        items.sort()
        for (_, end, a), (start, _, b) in zip(items, items[1:]):
            if start < end:
                raise ValueError(f"groups {a!r} and {b!r} overlap on the same parameter slice")


def _as_coupling(c: Coupling | Mapping[str, Any]) -> Coupling:
    if isinstance(c, Coupling):
        return c
    if isinstance(c, Mapping):
        try:
            return Coupling(**c)
        except TypeError as err:
            raise ValueError(f"coupling declaration {dict(c)!r}: {err}") from None
    raise ValueError(f"a coupling is a pruning.groups.Coupling or a mapping of its fields, got {type(c).__name__}")


def _report_unprunable(components: Mapping[str, nn.Module], groups: Sequence[Group],
                       extra: tuple[type[nn.Module], ...] = ()) -> None:
    """Warn about every ``nn.Linear`` whose width no group can remove (see the module doc)."""
    covered = {id(s.module) for g in groups for s in g.slices if s.dim == 0}
    for name, module in components.items():
        for path, seq, _ in _chains(module, [], None):
            layers = list(seq)
            linears = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
            for i in linears[:-1]:
                lin = layers[i]
                if id(lin) in covered:
                    continue
                if not _plain_linear(lin):
                    why = "its weight is computed (parametrized, spectral_norm or weight_norm)"
                else:
                    nxt = next(m for m in layers[i + 1:] if isinstance(m, nn.Linear) or not (
                        _is_affine_norm(m, lin.out_features) or is_elementwise(m, extra)))
                    if not isinstance(nxt, nn.Linear):
                        why = (f"it is followed by {type(nxt).__name__}"
                               + (" without affine parameters" if isinstance(nxt, nn.LayerNorm) else "")
                               + ", which is not an affine LayerNorm of its width or an elementwise module")
                    elif not _plain_linear(nxt):
                        why = "the Linear that reads it has a computed weight (parametrized, spectral_norm or weight_norm)"
                    else:
                        why = f"the next Linear reads {nxt.in_features} features, not its {lin.out_features}"
                warnings.warn(f"component {name!r}: the width of {'/'.join([name, *path, str(i)])} (Linear: {lin.extra_repr()}) is not "
                              f"prunable: {why}, and no coupling declares it", stacklevel=3)


def build_groups(
    components: Mapping[str, nn.Module],
    couplings: Sequence[Coupling | Mapping[str, Any]] = (),
    tied: Sequence[tuple[nn.Module, nn.Module]] = (),
    elementwise: Sequence[type[nn.Module]] = (),
) -> list[Group]:
    """All prunable groups: hidden groups of every component (in order), then one per coupling.

    ``elementwise``: the model's own module types that act on each channel independently. Slices of
    modules inside a tied online module are duplicated onto the twin module. Raises ``ValueError`` for
    inconsistent declarations (overlapping groups, bad couplings, mismatched twins); warns about widths
    that no group covers.
    """
    extra = tuple(elementwise)
    groups = [g for name, module in components.items() for g in _hidden_groups(name, module, extra)]
    groups += [_coupling_group(_as_coupling(c)) for c in couplings]
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate group names: {sorted({n for n in names if names.count(n) > 1})}")
    _check_disjoint(groups)
    _report_unprunable(components, groups, extra)
    twins = _tied_map(tied)
    if twins:
        for g in groups:
            g.slices += [ParamSlice(t, s.param_name, s.dim, s.offset, tied=True)
                         for s in g.slices for t in twins.get(s.module, ())]
    return groups


def model_groups(model: nn.Module, couplings: bool = True) -> list[Group]:
    """Groups of a model that declares itself (the protocol, all plain data):

    - ``model.components``: mapping name -> module (required);
    - ``model.couplings()``: dimensions shared across components (optional; :class:`Coupling` s or
      mappings of their fields); left out with ``couplings=False``;
    - ``model.shape_tied()``: ``(online, copy)`` pairs pruned identically (optional);
    - ``model.elementwise_modules()``: the model's own elementwise module types (optional).
    """
    components = getattr(model, "components", None)
    if not isinstance(components, Mapping):
        raise ValueError(f"{type(model).__name__} does not declare its components (a `components` mapping)")

    def declared(attr: str) -> list:
        fn = getattr(model, attr, None)
        return list(fn()) if callable(fn) else []

    return build_groups(components, declared("couplings") if couplings else [], declared("shape_tied"),
                        declared("elementwise_modules"))
