"""Configuration of the pruning package (dataclasses + one-line validation).

:class:`TrackingConfig` holds the keys of the ``pruning`` section of ``conf/train.yaml`` that control
importance tracking during training (see :mod:`pruning.tracker`); its nested :class:`ScheduleConfig`
(``pruning.schedule``) controls pruning *during* training (see :mod:`pruning.study.integration`). Every key
is described once in :data:`_CHECKS` / :data:`_SCHEDULE_CHECKS` below, so a new key is one field plus
one check.

Invalid values raise :class:`PruningConfigError` with a one-line message
``invalid config: pruning.<key>=<value>; allowed: <what>``, the same format as the agent's config.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pruning.schedule import SCHEDULE_KINDS

#: What a pruning ``ratio`` is a fraction of: planned-action FLOPs (prune job, main job) or scored channels.
BUDGETS = ("flops", "channels")
#: Temporal smoothing of gradient metrics returned by default by ``ImportanceTracker.scores``.
SMOOTHINGS = ("ema", "cumulative")
#: Per-component normalisation of scores (divide by that statistic over the component's channels).
NORMALIZATIONS = ("none", "mean", "max", "sum")
#: What a score is normalised over: its component, or its group (one layer's hidden width, the latent).
NORMALIZE_BY = ("component", "group")
#: ``grad_acc`` instantaneous signal: ``l2`` = ||g_S||_2, ``taylor_abs`` = |sum theta * g|.
GRAD_ACC_VARIANTS = ("l2", "taylor_abs")
#: ``grad_sq`` instantaneous signal: ``diag`` = sum g^2, ``obd`` = sum theta^2 g^2.
GRAD_SQ_VARIANTS = ("diag", "obd")
#: Ranking scopes of pruning during training (``per_group`` of :func:`pruning.prune.prune` takes one ratio
#: for all groups, so it cannot catch up per group as :func:`pruning.schedule.incremental_ratio` needs).
SCHEDULE_SCOPES = ("global", "per_component")


class PruningConfigError(ValueError):
    """A pruning configuration value is invalid; the message is one line for the user."""


@dataclass
class ScheduleConfig:
    """Pruning during training (the ``pruning.schedule`` section; see :mod:`pruning.schedule`).

    - ``enabled``: prune the model while it trains (needs ``pruning.enabled`` and ``metric`` tracked).
    - ``kind``: ``cosine`` or ``linear`` ramp of the cumulative ratio from 0 to ``target``.
    - ``target``: fraction of the *original* channels of the scored groups removed by ``end_step``.
    - ``start_step`` / ``end_step``: env steps of the ramp; ``start_step == end_step`` is one-shot.
    - ``every``: env steps between prunes of an iterative schedule (the last prune is at ``end_step``).
    - ``metric``: importance metric ranking the channels, a registered name (must be tracked).
    - ``scope``: ``global`` (all scored groups ranked together) or ``per_component`` (``target`` of
      each component, ranked within it).
    - ``min_channels``: channels every group keeps at least.
    - ``smoothing`` / ``normalize`` / ``normalize_by``: override the tracker's defaults for the scores
      (``None``: keep).
    """

    enabled: bool = False
    kind: str = "cosine"
    target: float = 0.5
    start_step: int = 20_000
    end_step: int = 60_000
    every: int = 5_000
    metric: str = "fisher"
    scope: str = "global"
    min_channels: int = 1
    smoothing: str | None = None
    normalize: str | None = None
    normalize_by: str | None = None


@dataclass
class TrackingConfig:
    """Importance tracking during training (the ``pruning`` section of ``conf/train.yaml``).

    - ``enabled``: attach an :class:`~pruning.tracker.ImportanceTracker` to training.
    - ``metrics``: metrics to track, registered names (:func:`pruning.metrics.metric_names`; default: all).
    - ``interval``: read the gradients every ``interval`` updates.
    - ``gate_interval``: capture per-sample gate derivatives (``fisher``, ``bayes``; activation x
      output-gradient hooks) on tracked updates that are also multiples of this (1: every tracked update;
      the hooks cost ~20 % of a CPU-preset update while on, see ``benchmarks/RESULTS.md``).
    - ``snapshot_interval``: store the scores of every metric every ``snapshot_interval`` updates
      (written to ``importance.parquet`` at checkpoints); ``0`` = never.
    - ``smoothing``: ``ema`` or ``cumulative``: what ``scores()`` returns by default (both are kept).
    - ``beta``: EMA decay in ``[0, 1)`` (bias-corrected, see :mod:`pruning.importance`).
    - ``normalize``: normalisation of scores, one of :data:`NORMALIZATIONS`.
    - ``normalize_by``: what ``normalize`` divides by the statistic of, one of :data:`NORMALIZE_BY`:
      each ``component`` (encoder, dynamics, ...) or each ``group`` (every layer's hidden width).
    - ``bayes_kappa``: ``bayes`` score = posterior mean + ``bayes_kappa`` * posterior std (>= 0).
    - ``grad_acc_variant`` / ``grad_sq_variant``: see :data:`GRAD_ACC_VARIANTS`, :data:`GRAD_SQ_VARIANTS`.
    - ``prune_latent``: include the latent coupling group (TD-MPC) in the tracked groups.
    - ``seed``: seed of the ``random`` baseline.
    - ``schedule``: pruning during training, a :class:`ScheduleConfig` (off by default).
    """

    enabled: bool = True
    metrics: list[str] = field(default_factory=lambda: list(_names()))
    interval: int = 1
    gate_interval: int = 1
    snapshot_interval: int = 500
    smoothing: str = "ema"
    beta: float = 0.99
    normalize: str = "mean"
    normalize_by: str = "group"
    bayes_kappa: float = 1.0
    grad_acc_variant: str = "l2"
    grad_sq_variant: str = "diag"
    prune_latent: bool = True
    seed: int = 0
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


# ---------------------------------------------------------------------------------------- checks


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _one_of(options: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, str) and v in options), "|".join(options)


def _names() -> tuple[str, ...]:
    """Registered metric names (imported here, not at module level: the metrics import this module)."""
    from pruning.metrics import metric_names

    return metric_names()


def _metric_list(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(m, str) and m in _names() for m in v)
            and len(set(v)) == len(v))


class _Registered:
    """``allowed`` text of a metric-name check, read from the registry when the error is written."""

    def __init__(self, template: str):
        self.template = template

    def __str__(self) -> str:
        return self.template.format("|".join(_names()))


def _registered_metric() -> tuple[Callable[[Any], bool], Any]:
    return (lambda v: isinstance(v, str) and v in _names()), _Registered("{}")


#: key -> (predicate, what is allowed). One entry per field of TrackingConfig.
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "enabled": (lambda v: isinstance(v, bool), "true|false"),
    "metrics": (_metric_list, _Registered("a non-empty list without repeats of {}")),
    "interval": (lambda v: _is_int(v) and v >= 1, "an integer >= 1 (updates)"),
    "gate_interval": (lambda v: _is_int(v) and v >= 1, "an integer >= 1 (updates)"),
    "snapshot_interval": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (updates; 0 = no snapshots)"),
    "smoothing": _one_of(SMOOTHINGS),
    "beta": (lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)"),
    "normalize": _one_of(NORMALIZATIONS),
    "normalize_by": _one_of(NORMALIZE_BY),
    "bayes_kappa": (lambda v: _is_real(v) and v >= 0, "a finite number >= 0"),
    "grad_acc_variant": _one_of(GRAD_ACC_VARIANTS),
    "grad_sq_variant": _one_of(GRAD_SQ_VARIANTS),
    "prune_latent": (lambda v: isinstance(v, bool), "true|false"),
    "seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "schedule": (lambda v: isinstance(v, (ScheduleConfig, Mapping)), "a mapping of pruning.schedule keys"),
}

#: key -> (predicate, what is allowed). One entry per field of ScheduleConfig (prefix ``schedule.``).
_SCHEDULE_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "enabled": (lambda v: isinstance(v, bool), "true|false"),
    "kind": _one_of(SCHEDULE_KINDS),
    "target": (lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1) (fraction of the original channels)"),
    "start_step": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (env steps)"),
    "end_step": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (env steps)"),
    "every": (lambda v: _is_int(v) and v >= 1, "an integer >= 1 (env steps)"),
    "metric": _registered_metric(),
    "scope": _one_of(SCHEDULE_SCOPES),
    "min_channels": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "smoothing": (lambda v: v is None or (isinstance(v, str) and v in SMOOTHINGS), "null|" + "|".join(SMOOTHINGS)),
    "normalize": (lambda v: v is None or (isinstance(v, str) and v in NORMALIZATIONS),
                  "null|" + "|".join(NORMALIZATIONS)),
    "normalize_by": (lambda v: v is None or (isinstance(v, str) and v in NORMALIZE_BY),
                     "null|" + "|".join(NORMALIZE_BY)),
}


def require(cond: bool, key: str, value: Any, allowed: str) -> None:
    """Raise a one-line :class:`PruningConfigError` naming ``key``, ``value`` and what is allowed unless ``cond``."""
    if not cond:
        raise PruningConfigError(f"invalid config: {key}={value!r}; allowed: {allowed}")


def _fail(key: str, value: Any, allowed: str) -> None:
    require(False, f"pruning.{key}", value, allowed)


def schedule_config(data: Mapping[str, Any] | ScheduleConfig | None) -> ScheduleConfig:
    """A validated :class:`ScheduleConfig` (a copy) from a mapping (``pruning.schedule``); ``None``: defaults.

    Unknown keys are rejected with a one-line :class:`PruningConfigError`.
    """
    if data is None:
        return validate_schedule(ScheduleConfig())
    if isinstance(data, ScheduleConfig):
        return validate_schedule(dataclasses.replace(data))
    if not isinstance(data, Mapping):
        _fail("schedule", data, _CHECKS["schedule"][1])
    names = [f.name for f in dataclasses.fields(ScheduleConfig)]
    for key in data:
        if key not in names:
            raise PruningConfigError(
                f"invalid config: unknown key pruning.schedule.{key}; allowed: {', '.join(names)}"
            )
    return validate_schedule(ScheduleConfig(**data))


def validate_schedule(cfg: ScheduleConfig) -> ScheduleConfig:
    """Check every key of a :class:`ScheduleConfig` on its own (see :func:`check_schedule_against` for
    the checks against the tracking keys); raises :class:`PruningConfigError` on the first bad value."""
    for f in dataclasses.fields(cfg):
        ok, allowed = _SCHEDULE_CHECKS[f.name]
        value = getattr(cfg, f.name)
        if not ok(value):
            _fail(f"schedule.{f.name}", value, allowed)
    if cfg.end_step < cfg.start_step:
        _fail("schedule.end_step", cfg.end_step, f"an integer >= pruning.schedule.start_step={cfg.start_step}")
    cfg.target = float(cfg.target)
    return cfg


def check_schedule_against(cfg: TrackingConfig) -> TrackingConfig:
    """An enabled schedule needs the tracker (``pruning.enabled``) and its ``metric`` among ``pruning.metrics``.

    Kept out of :func:`validate_tracking` so that a tracker built for other metrics from the same
    section (e.g. by the prune job) is not refused because of the schedule.
    """
    s = cfg.schedule
    if not s.enabled:
        return cfg
    if not cfg.enabled:
        _fail("enabled", cfg.enabled, "true (pruning.schedule.enabled=true scores channels with the tracker)")
    if s.metric not in cfg.metrics:
        _fail("schedule.metric", s.metric, f"a tracked metric (pruning.metrics): {'|'.join(cfg.metrics)}")
    return cfg


def validate_tracking(cfg: TrackingConfig) -> TrackingConfig:
    """Check every key of ``cfg`` (schedule keys included); raises :class:`PruningConfigError` on the first
    bad value.

    Also normalises ``metrics`` to a list (Hydra gives a ListConfig / tuple), turns a ``schedule``
    mapping into a :class:`ScheduleConfig` and returns ``cfg``.
    """
    for f in dataclasses.fields(cfg):
        ok, allowed = _CHECKS[f.name]
        value = getattr(cfg, f.name)
        if not ok(value):
            _fail(f.name, list(value) if isinstance(value, tuple) else value, allowed)
    cfg.metrics = list(cfg.metrics)
    cfg.beta, cfg.bayes_kappa = float(cfg.beta), float(cfg.bayes_kappa)
    cfg.schedule = schedule_config(cfg.schedule)
    return cfg


def tracking_config(data: Mapping[str, Any] | TrackingConfig | None) -> TrackingConfig:
    """A validated :class:`TrackingConfig` from a mapping (e.g. ``cfg.pruning`` of a train config).

    ``None`` gives the defaults. Unknown keys are rejected with a one-line :class:`PruningConfigError`.
    The schedule is also checked against the tracking keys (:func:`check_schedule_against`).
    """
    if isinstance(data, TrackingConfig):
        return check_schedule_against(validate_tracking(dataclasses.replace(data)))
    if data is None:
        return validate_tracking(TrackingConfig())
    if not isinstance(data, Mapping):
        raise PruningConfigError(f"invalid config: pruning={data!r}; allowed: a mapping of pruning keys")
    names = [f.name for f in dataclasses.fields(TrackingConfig)]
    for key in data:
        if key not in names:
            raise PruningConfigError(f"invalid config: unknown key pruning.{key}; allowed: {', '.join(names)}")
    values = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in data.items()}
    return check_schedule_against(validate_tracking(TrackingConfig(**values)))
