"""Component-aware pruning of neural-network controllers by gradient-based importance estimation.

Works on any ``nn.Module`` that declares ``components`` (a mapping name -> module) and, optionally,
``couplings()`` and ``shape_tied()``; the TD-MPC world model of this repository is one such model. See
``pruning/README.md`` for the package map and ``docs/method.md`` for the formulas.

Where torch is installed every public name is imported here; without torch nothing is, so that a
submodule that needs no torch (the deploy runtime, :mod:`pruning.deploy`) still imports.
"""

from __future__ import annotations

import importlib
import os

#: public name -> submodule that defines it
_EXPORTS = {
    "Coupling": "pruning.groups",
    "Group": "pruning.groups",
    "ImportanceMetric": "pruning.metrics",
    "Evidence": "pruning.metrics",
    "GateCapture": "pruning.gates",
    "metric_names": "pruning.metrics",
    "register": "pruning.metrics",
    "tracked_metrics": "pruning.metrics",
    "ImportanceTracker": "pruning.tracker",
    "NORMALIZATIONS": "pruning.config",
    "NORMALIZE_BY": "pruning.config",
    "ParamSlice": "pruning.groups",
    "PruningConfigError": "pruning.config",
    "PruningSchedule": "pruning.schedule",
    "SCHEDULE_KINDS": "pruning.schedule",
    "SCHEDULE_SCOPES": "pruning.config",
    "SCOPES": "pruning.prune",
    "SMOOTHINGS": "pruning.config",
    "ScheduleConfig": "pruning.config",
    "TrackingConfig": "pruning.config",
    "apply_pruning": "pruning.prune",
    "build_groups": "pruning.groups",
    "component_flops": "pruning.measure",
    "count_params": "pruning.measure",
    "incremental_ratio": "pruning.schedule",
    "is_elementwise": "pruning.groups",
    "measure_latency": "pruning.measure",
    "mlp_flops": "pruning.measure",
    "model_groups": "pruning.groups",
    "normalize_scores": "pruning.importance",
    "prune": "pruning.prune",
    "ratio_at": "pruning.schedule",
    "resize_to_state_dict": "pruning.serialize",
    "schedule_config": "pruning.config",
    "select_channels": "pruning.prune",
    "tracking_config": "pruning.config",
    "validate_schedule": "pruning.config",
    "validate_tracking": "pruning.config",
}

__all__ = sorted(_EXPORTS)


def _load_all() -> None:
    # Eager, not lazy (PEP 562): the function ``prune`` shares its name with the submodule
    # ``pruning.prune``, which the import system binds on the package once it is imported.
    for name, module in _EXPORTS.items():
        globals()[name] = getattr(importlib.import_module(module), name)


# OpenMP workers spin briefly (not 300 000 polls) before sleeping: on a shared CPU, spinning workers
# that get descheduled stall every parallel region (measured: updates 2x faster than OpenMP's default beside
# one busy process, ~20 % slower on a quiet machine; table in benchmarks/RESULTS.md). Must precede
# torch's start; a value already in the environment wins.
os.environ.setdefault("GOMP_SPINCOUNT", "3000")

try:
    import torch  # noqa: F401
except ImportError:  # a deployment machine: only torch-free submodules (pruning.deploy) are usable
    pass
else:
    _load_all()
