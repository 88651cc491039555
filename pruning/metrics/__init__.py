"""Importance metrics behind one interface (:mod:`pruning.metrics.base`) and a registry by name.

Built in (formulas and sources in ``docs/method.md``):

| name | module | what it scores |
|---|---|---|
| ``grad_acc`` | :mod:`~pruning.metrics.gradient` | Gradient Accumulation: accumulated ‖g‖ of the channel's parameter slice |
| ``fisher`` | :mod:`~pruning.metrics.fisher` | empirical Fisher information of a gate on the channel (per-sample) |
| ``bayes`` | :mod:`~pruning.metrics.bayes` | Bayesian Uncertainty: Gaussian posterior of the per-step gate saliency |
| ``taylor`` | :mod:`~pruning.metrics.gradient` | group Taylor (Molchanov et al. 2019), parameter form |
| ``grad_sq`` | :mod:`~pruning.metrics.gradient` | squared mini-batch gradient Σg² (not Fisher information) |
| ``l1`` / ``l2`` | :mod:`~pruning.metrics.magnitude` | norm of the channel's producing weights (filter norm) |
| ``l1_group`` / ``l2_group`` | :mod:`~pruning.metrics.magnitude` | norm of the channel's whole slice |
| ``random`` | :mod:`~pruning.metrics.magnitude` | U(0, 1), fixed per run |
"""

# Built-in metrics register themselves on import (order = default order of the tables).
from pruning.metrics import bayes, fisher, gradient, magnitude  # noqa: E402,F401,I001
from pruning.metrics.base import Evidence, ImportanceMetric, SmoothedMetric
from pruning.metrics.registry import metric_class, metric_names, register, tracked_metrics, unregister
from tdmpc.plugins import load_plugins

#: Metrics the main job compares by default: the three gradient metrics and the field's baselines.
MAIN_JOB_METRICS = ("grad_acc", "fisher", "bayes", "taylor", "l1", "l2", "random")

# The user's own metric modules named in CA_PRUNE_PLUGINS (tdmpc/plugins.py), in every process.
load_plugins()

__all__ = ["MAIN_JOB_METRICS", "Evidence", "ImportanceMetric", "SmoothedMetric", "metric_class", "metric_names",
           "register", "tracked_metrics", "unregister"]
