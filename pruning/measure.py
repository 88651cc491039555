"""What pruning buys: parameters, analytic FLOPs and measured latency of a model that declares components.

**Parameters** (:func:`count_params`): per declared component and ``total`` (the sum over the
components, each parameter counted once). Shape-tied copies (``model.shape_tied()``, e.g. the TD-MPC
target Q-ensemble) are reported under their own attribute name (``"target_qs"``) and are *not* in
``total``: they are an EMA copy that is never trained nor used for acting.

**FLOPs** are the matrix-multiply FLOPs, exactly what :class:`torch.utils.flop_counter.FlopCounterMode`
counts (``mm``, ``addmm``, ``bmm``, ``baddbmm``; bias additions, LayerNorm, activations, softmax and
the planner's elementwise arithmetic are not counted). An ``nn.Linear`` with ``in`` inputs and ``out``
outputs applied to ``B`` rows costs

    F_linear(B) = 2 · B · in · out

(one multiply and one add per weight per row), so an MLP applied to ``B`` rows costs
``F_mlp(B) = Σ_linears 2 · B · in_k · out_k``. The sums are written out here instead of tracing with
``FlopCounterMode`` because the planner's count depends on the configuration (iterations, samples,
horizon) and must be available without running it; the tests check both agree exactly.

The planned-action cost of a TD-MPC agent (which rows every layer is applied to) is study code:
:mod:`pruning.study.cost_model`.

**Latency** (:func:`measure_latency`): ``torch.utils.benchmark.Timer`` with
``blocked_autorange``, single-threaded by default, a batch-1 observation, CUDA synchronised inside
the timed statement. Returns plain dicts ``{"median_ms", "iqr_ms", "repeats"}``.

This module knows no particular model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn
from torch.utils.benchmark import Timer

# ---------------------------------------------------------------------------------------- params


def _tied_names(model: nn.Module) -> dict[str, nn.Module]:
    """Attribute names of the shape-tied copies of ``model`` (``{"target_qs": module}``)."""
    tied = list(model.shape_tied()) if callable(getattr(model, "shape_tied", None)) else []
    names = {id(m): n for n, m in model.named_modules() if n}
    out = {}
    for _, copy in tied:
        if id(copy) not in names:
            raise ValueError(f"shape-tied copy {type(copy).__name__} is not a submodule of the model")
        out[names[id(copy)]] = copy
    return out


def _numel(module: nn.Module, seen: set[int]) -> int:
    n = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def count_params(model: nn.Module) -> dict[str, int]:
    """Parameters per component, ``total`` over the components, and tied copies separately.

    ``{"encoder": n, ..., "total": sum of the components, "target_qs": n}``: a parameter shared by two
    components is counted once (in the first); tied copies are listed under their attribute name and
    excluded from ``total``.
    """
    components = getattr(model, "components", None)
    if not isinstance(components, Mapping) or not components:
        raise ValueError(f"{type(model).__name__} does not declare its components (a `components` mapping)")
    seen: set[int] = set()
    out = {name: _numel(module, seen) for name, module in components.items()}
    if "total" in out:
        raise ValueError("a component must not be named 'total'")
    out["total"] = sum(out.values())
    for name, module in _tied_names(model).items():
        out[name] = sum(p.numel() for p in module.parameters())
    return out


# ---------------------------------------------------------------------------------------- FLOPs


def mlp_flops(module: nn.Module, batch: int) -> int:
    """``Σ 2 · batch · in · out`` over every ``nn.Linear`` in ``module`` (each applied to ``batch`` rows).

    Exact for a ``Sequential`` MLP (and for an ensemble evaluated on all members); the count
    ``FlopCounterMode`` reports for ``module(x)`` with ``x`` of shape ``(batch, in)``.
    """
    return sum(2 * batch * m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def component_flops(model: nn.Module, batch: int = 1) -> dict[str, int]:
    """:func:`mlp_flops` of every declared component at ``batch`` rows, and their ``total``."""
    out = {name: mlp_flops(m, batch) for name, m in model.components.items()}
    out["total"] = sum(out.values())
    return out


# ---------------------------------------------------------------------------------------- latency

CLOCKS = ("wall", "thread")


def measure_latency(
    fn: Callable[[], Any],
    num_threads: int = 1,
    min_run_time: float = 1.0,
    device: torch.device | str | None = None,
    warmup: int = 3,
    clock: str = "wall",
) -> dict[str, float]:
    """Median and inter-quartile range of ``fn()`` in ms (``Timer.blocked_autorange``).

    ``device`` of type CUDA synchronises after every call inside the timed statement. ``repeats`` is
    the number of measured blocks (each block runs ``fn`` the same number of times).

    ``clock="wall"`` (default) times wall-clock time; ``clock="thread"`` times the CPU time of the
    calling thread (``time.thread_time``), which leaves out the time the thread waits while other
    processes hold the core: on a shared machine it is the less noisy estimate of single-threaded CPU
    latency (equal to wall time on an idle machine with ``num_threads=1``; meaningless with more
    threads or on CUDA, where it is refused).
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    if clock == "thread" and (num_threads != 1 or (device is not None and torch.device(device).type != "cpu")):
        raise ValueError(f"clock='thread' needs num_threads=1 on the CPU, got num_threads={num_threads}, device={device}")
    sync = torch.device(device).type == "cuda" if device is not None else False

    def stmt() -> None:
        fn()
        if sync:
            torch.cuda.synchronize()

    for _ in range(warmup):
        stmt()
    timer = time.thread_time if clock == "thread" else time.perf_counter
    m = Timer(stmt="stmt()", globals={"stmt": stmt}, num_threads=num_threads, timer=timer).blocked_autorange(
        min_run_time=min_run_time
    )
    return {"median_ms": m.median * 1e3, "iqr_ms": m.iqr * 1e3, "repeats": len(m.times)}
