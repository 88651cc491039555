"""Component-aware pruning of neural-network controllers by gradient-based importance estimation.

Works on any ``nn.Module`` that declares ``components`` (a mapping name -> module) and, optionally,
``couplings()`` and ``shape_tied()``; the TD-MPC world model of ``tdmpc`` is one such model. See
``pruning/README.md`` for the package map and ``docs/method.md`` for the formulas.
"""

from pruning.config import (
    GRADIENT_METRICS,
    METRICS,
    NORMALIZATIONS,
    NORMALIZE_BY,
    SCHEDULE_SCOPES,
    SMOOTHINGS,
    PruningConfigError,
    ScheduleConfig,
    TrackingConfig,
    schedule_config,
    tracking_config,
    validate_schedule,
    validate_tracking,
)
from pruning.groups import (
    Coupling,
    Group,
    ParamSlice,
    build_groups,
    is_elementwise,
    model_groups,
    tdmpc_components,
)
from pruning.importance import normalize_scores
from pruning.measure import (
    component_flops,
    count_params,
    measure_latency,
    mlp_flops,
    plan_flops,
    policy_action_flops,
    tdmpc_latency,
)
from pruning.prune import SCOPES, apply_pruning, prune, select_channels
from pruning.schedule import SCHEDULE_KINDS, PruningSchedule, incremental_ratio, ratio_at
from pruning.serialize import resize_to_state_dict
from pruning.tracker import ImportanceTracker

__all__ = [
    "GRADIENT_METRICS",
    "METRICS",
    "NORMALIZATIONS",
    "NORMALIZE_BY",
    "SCHEDULE_KINDS",
    "SCHEDULE_SCOPES",
    "SCOPES",
    "SMOOTHINGS",
    "Coupling",
    "Group",
    "ImportanceTracker",
    "ParamSlice",
    "PruningConfigError",
    "PruningSchedule",
    "ScheduleConfig",
    "TrackingConfig",
    "apply_pruning",
    "build_groups",
    "component_flops",
    "count_params",
    "incremental_ratio",
    "is_elementwise",
    "measure_latency",
    "mlp_flops",
    "model_groups",
    "normalize_scores",
    "plan_flops",
    "policy_action_flops",
    "prune",
    "ratio_at",
    "resize_to_state_dict",
    "schedule_config",
    "select_channels",
    "tdmpc_components",
    "tdmpc_latency",
    "tracking_config",
    "validate_schedule",
    "validate_tracking",
]
