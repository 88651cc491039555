"""Component-aware pruning: prunable groups of declared components and structural pruning."""

from pruning.groups import (
    Coupling,
    Group,
    ParamSlice,
    build_groups,
    is_elementwise,
    model_groups,
    tdmpc_components,
)
from pruning.prune import SCOPES, apply_pruning, prune, select_channels

__all__ = [
    "SCOPES",
    "Coupling",
    "Group",
    "ParamSlice",
    "apply_pruning",
    "build_groups",
    "is_elementwise",
    "model_groups",
    "prune",
    "select_channels",
    "tdmpc_components",
]
