"""Loading a pruned model: give a freshly built (dense) model the shapes stored in a state dict.

A pruned model is saved as an ordinary ``state_dict`` (tensors only, loadable with
``torch.load(..., weights_only=True)``) whose ``nn.Linear`` / ``nn.LayerNorm`` parameters are smaller
than those of the architecture its constructor builds. :func:`resize_to_state_dict` replaces every
such parameter by an uninitialised ``nn.Parameter`` of the stored shape (same dtype, device and
``requires_grad``) and updates ``in_features`` / ``out_features`` / ``normalized_shape``, after which
``model.load_state_dict(state_dict)`` fills in the values. It works for any model (including the
TD-MPC target Q-ensemble, which is just another set of submodules); nothing about pruning groups is
needed, because the stored shapes say everything.

Optimisers hold references to the old parameter objects: build them again after resizing (e.g.
``TDMPC.build_optimizers()``), then load their state dicts.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn


def _stored_shape(state_dict: Mapping[str, torch.Tensor], key: str) -> torch.Size | None:
    t = state_dict.get(key)
    return t.shape if isinstance(t, torch.Tensor) else None


def _replace(module: nn.Module, name: str, shape: torch.Size) -> None:
    old = getattr(module, name)
    new = torch.empty(shape, dtype=old.dtype, device=old.device)
    setattr(module, name, nn.Parameter(new, requires_grad=old.requires_grad))


@torch.no_grad()
def resize_to_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> list[str]:
    """Resize ``model``'s ``nn.Linear`` and ``nn.LayerNorm`` modules to the shapes in ``state_dict``.

    ``prefix`` is prepended to the module names when looking up keys (for a state dict nested inside
    a larger one, e.g. ``"model."``). Returns the qualified names of the resized modules. Raises
    ``ValueError`` (before changing anything) when a stored shape does not fit the module type: a
    Linear weight that is not 2-D, a bias whose length differs from the stored weight's rows, or a
    LayerNorm whose stored parameters are not 1-D of one common length.
    """
    plan: list[tuple[str, nn.Module, dict[str, torch.Size]]] = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.LayerNorm)):
            continue
        shapes = {}
        for pname, p in module.named_parameters(recurse=False):
            stored = _stored_shape(state_dict, f"{prefix}{name}.{pname}" if name else f"{prefix}{pname}")
            if stored is not None and stored != p.shape:
                shapes[pname] = stored
        if not shapes:
            continue
        full = {pname: shapes.get(pname, p.shape) for pname, p in module.named_parameters(recurse=False)}
        if isinstance(module, nn.Linear):
            w = full["weight"]
            if len(w) != 2 or ("bias" in full and tuple(full["bias"]) != (w[0],)):
                raise ValueError(f"cannot resize Linear {name!r}: stored shapes {dict(full)} are inconsistent")
        else:
            lengths = {tuple(s) for s in full.values()}
            if len(lengths) != 1 or len(next(iter(lengths))) != 1:
                raise ValueError(f"cannot resize LayerNorm {name!r}: stored shapes {dict(full)} are not one 1-D length")
        plan.append((name, module, shapes))

    for _, module, shapes in plan:
        for pname, shape in shapes.items():
            _replace(module, pname, shape)
        if isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
        else:
            module.normalized_shape = (module.weight.shape[0],)
    return [name for name, _, _ in plan]
