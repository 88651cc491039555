"""Configuration of the pruning package (dataclasses + one-line validation).

:class:`TrackingConfig` holds the keys of the ``pruning`` section of ``conf/train.yaml`` that control
importance tracking during training (see :mod:`pruning.tracker`). Prune-time keys (metric, ratio,
scope, ...) are meant to be added as further fields of the same flat section later: every key is
described once in :data:`_CHECKS` below, so a new key is one field plus one check.

Invalid values raise :class:`PruningConfigError` with a one-line message
``invalid config: pruning.<key>=<value>; allowed: <what>``, the same format as ``tdmpc.config``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Importance metrics a tracker can compute (see :mod:`pruning.importance`).
METRICS = ("grad_acc", "fisher", "bayes", "l1", "l2", "random", "taylor")
#: Metrics accumulated from gradients during training (the others are computed on demand).
GRADIENT_METRICS = ("grad_acc", "fisher", "bayes", "taylor")
#: Temporal smoothing of gradient metrics returned by default by ``ImportanceTracker.scores``.
SMOOTHINGS = ("ema", "cumulative")
#: Per-component normalisation of scores (divide by that statistic over the component's channels).
NORMALIZATIONS = ("none", "mean", "max", "sum")
#: ``grad_acc`` instantaneous signal: ``l2`` = ||g_S||_2, ``taylor_abs`` = |sum theta * g|.
GRAD_ACC_VARIANTS = ("l2", "taylor_abs")
#: ``fisher`` instantaneous signal: ``diag`` = sum g^2 (empirical diagonal Fisher), ``obd`` = sum theta^2 g^2.
FISHER_VARIANTS = ("diag", "obd")


class PruningConfigError(ValueError):
    """A pruning configuration value is invalid; the message is one line for the user."""


@dataclass
class TrackingConfig:
    """Importance tracking during training (the ``pruning`` section of ``conf/train.yaml``).

    - ``enabled``: attach an :class:`~pruning.tracker.ImportanceTracker` to training.
    - ``metrics``: metrics to track, a subset of :data:`METRICS` (default: all).
    - ``interval``: read the gradients every ``interval`` updates.
    - ``snapshot_interval``: store the scores of every metric every ``snapshot_interval`` updates
      (written to ``importance.parquet`` at checkpoints); ``0`` = never.
    - ``smoothing``: ``ema`` or ``cumulative``: what ``scores()`` returns by default (both are kept).
    - ``beta``: EMA decay in ``[0, 1)`` (bias-corrected, see :mod:`pruning.importance`).
    - ``normalize``: per-component normalisation of scores, one of :data:`NORMALIZATIONS`.
    - ``bayes_kappa``: ``bayes`` score = posterior mean + ``bayes_kappa`` * posterior std (>= 0).
    - ``grad_acc_variant`` / ``fisher_variant``: see :data:`GRAD_ACC_VARIANTS`, :data:`FISHER_VARIANTS`.
    - ``prune_latent``: include the latent coupling group (TD-MPC) in the tracked groups.
    - ``seed``: seed of the ``random`` baseline.
    """

    enabled: bool = True
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    interval: int = 1
    snapshot_interval: int = 500
    smoothing: str = "ema"
    beta: float = 0.99
    normalize: str = "mean"
    bayes_kappa: float = 1.0
    grad_acc_variant: str = "l2"
    fisher_variant: str = "diag"
    prune_latent: bool = True
    seed: int = 0


# ---------------------------------------------------------------------------------------- checks


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _one_of(options: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, str) and v in options), "|".join(options)


def _metric_list(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(m, str) and m in METRICS for m in v)
            and len(set(v)) == len(v))


#: key -> (predicate, what is allowed). One entry per field of TrackingConfig.
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "enabled": (lambda v: isinstance(v, bool), "true|false"),
    "metrics": (_metric_list, f"a non-empty list without repeats of {'|'.join(METRICS)}"),
    "interval": (lambda v: _is_int(v) and v >= 1, "an integer >= 1 (updates)"),
    "snapshot_interval": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (updates; 0 = no snapshots)"),
    "smoothing": _one_of(SMOOTHINGS),
    "beta": (lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)"),
    "normalize": _one_of(NORMALIZATIONS),
    "bayes_kappa": (lambda v: _is_real(v) and v >= 0, "a finite number >= 0"),
    "grad_acc_variant": _one_of(GRAD_ACC_VARIANTS),
    "fisher_variant": _one_of(FISHER_VARIANTS),
    "prune_latent": (lambda v: isinstance(v, bool), "true|false"),
    "seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
}


def _fail(key: str, value: Any, allowed: str) -> None:
    raise PruningConfigError(f"invalid config: pruning.{key}={value!r}; allowed: {allowed}")


def validate_tracking(cfg: TrackingConfig) -> TrackingConfig:
    """Check every key of ``cfg``; raises :class:`PruningConfigError` on the first bad value.

    Also normalises ``metrics`` to a list (Hydra gives a ListConfig / tuple) and returns ``cfg``.
    """
    for f in dataclasses.fields(cfg):
        ok, allowed = _CHECKS[f.name]
        value = getattr(cfg, f.name)
        if not ok(value):
            _fail(f.name, list(value) if isinstance(value, tuple) else value, allowed)
    cfg.metrics = list(cfg.metrics)
    cfg.beta, cfg.bayes_kappa = float(cfg.beta), float(cfg.bayes_kappa)
    return cfg


def tracking_config(data: Mapping[str, Any] | TrackingConfig | None) -> TrackingConfig:
    """A validated :class:`TrackingConfig` from a mapping (e.g. ``cfg.pruning`` of a train config).

    ``None`` gives the defaults. Unknown keys are rejected with a one-line :class:`PruningConfigError`.
    """
    if isinstance(data, TrackingConfig):
        return validate_tracking(dataclasses.replace(data))
    if data is None:
        return validate_tracking(TrackingConfig())
    if not isinstance(data, Mapping):
        raise PruningConfigError(f"invalid config: pruning={data!r}; allowed: a mapping of pruning keys")
    names = [f.name for f in dataclasses.fields(TrackingConfig)]
    for key in data:
        if key not in names:
            raise PruningConfigError(f"invalid config: unknown key pruning.{key}; allowed: {', '.join(names)}")
    values = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in data.items()}
    return validate_tracking(TrackingConfig(**values))
