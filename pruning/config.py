"""Configuration of the pruning package (dataclasses + one-line validation).

:class:`TrackingConfig` holds the keys of the ``pruning`` section of ``conf/train.yaml`` that control
importance tracking during training (see :mod:`pruning.tracker`); its nested :class:`ScheduleConfig`
(``pruning.schedule``) controls pruning *during* training (see :mod:`pruning.study.integration`). Every key
is checked by one :func:`require` call in :func:`validate_tracking` / :func:`validate_schedule`, so a new key
is one field plus one line.

Invalid values raise :class:`PruningConfigError` with a one-line message
``invalid config: pruning.<key>=<value>; allowed: <what>``, the same format as the agent's config.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
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
      the hooks cost ~12 % of a CPU-preset update while on; 10 cuts that to ~3 % but moves fisher's
      ranking to rho 0.90 of its every-update ranking, see ``benchmarks/RESULTS.md``).
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


def require(cond: bool, key: str, value: Any, allowed: str) -> None:
    """Raise a one-line :class:`PruningConfigError` naming ``key``, ``value`` and what is allowed unless ``cond``.

    The one validator of the configs of this package and its study layer (the agent's configs use
    :func:`tdmpc.config.require`, the same function for :class:`tdmpc.config.ConfigError`).
    """
    if not cond:
        raise PruningConfigError(f"invalid config: {key}={value!r}; allowed: {allowed}")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _names() -> tuple[str, ...]:
    """Registered metric names (imported here, not at module level: the metrics import this module)."""
    from pruning.metrics import metric_names

    return metric_names()


def _require_one_of(cfg: Any, key: str, options: tuple[str, ...], prefix: str, nullable: bool = False) -> None:
    value = getattr(cfg, key)
    ok = (nullable and value is None) or (isinstance(value, str) and value in options)
    require(ok, f"{prefix}{key}", value, ("null|" if nullable else "") + "|".join(options))


def _require_int(cfg: Any, key: str, prefix: str, minimum: int, allowed: str) -> None:
    value = getattr(cfg, key)
    require(_is_int(value) and value >= minimum, f"{prefix}{key}", value, allowed)


def _reject_unknown(data: Mapping[str, Any], cls: type, prefix: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise PruningConfigError(f"invalid config: unknown key {prefix}{key}; allowed: {', '.join(names)}")


def schedule_config(data: Mapping[str, Any] | ScheduleConfig | None) -> ScheduleConfig:
    """A validated :class:`ScheduleConfig` (a copy) from a mapping (``pruning.schedule``); ``None``: defaults.

    Unknown keys are rejected with a one-line :class:`PruningConfigError`.
    """
    if data is None:
        return validate_schedule(ScheduleConfig())
    if isinstance(data, ScheduleConfig):
        return validate_schedule(dataclasses.replace(data))
    require(isinstance(data, Mapping), "pruning.schedule", data, "a mapping of pruning.schedule keys")
    _reject_unknown(data, ScheduleConfig, "pruning.schedule.")
    return validate_schedule(ScheduleConfig(**data))


def validate_schedule(cfg: ScheduleConfig) -> ScheduleConfig:
    """Check every key of a :class:`ScheduleConfig` on its own (see :func:`check_schedule_against` for
    the checks against the tracking keys); raises :class:`PruningConfigError` on the first bad value."""
    p = "pruning.schedule."
    require(isinstance(cfg.enabled, bool), p + "enabled", cfg.enabled, "true|false")
    _require_one_of(cfg, "kind", SCHEDULE_KINDS, p)
    require(_is_real(cfg.target) and 0 <= cfg.target < 1, p + "target", cfg.target,
            "a number in [0, 1) (fraction of the original channels)")
    _require_int(cfg, "start_step", p, 0, "an integer >= 0 (env steps)")
    _require_int(cfg, "end_step", p, 0, "an integer >= 0 (env steps)")
    _require_int(cfg, "every", p, 1, "an integer >= 1 (env steps)")
    require(isinstance(cfg.metric, str) and cfg.metric in _names(), p + "metric", cfg.metric, "|".join(_names()))
    _require_one_of(cfg, "scope", SCHEDULE_SCOPES, p)
    _require_int(cfg, "min_channels", p, 1, "an integer >= 1")
    _require_one_of(cfg, "smoothing", SMOOTHINGS, p, nullable=True)
    _require_one_of(cfg, "normalize", NORMALIZATIONS, p, nullable=True)
    _require_one_of(cfg, "normalize_by", NORMALIZE_BY, p, nullable=True)
    require(cfg.end_step >= cfg.start_step, p + "end_step", cfg.end_step,
            f"an integer >= pruning.schedule.start_step={cfg.start_step}")
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
    require(cfg.enabled, "pruning.enabled", cfg.enabled,
            "true (pruning.schedule.enabled=true scores channels with the tracker)")
    require(s.metric in cfg.metrics, "pruning.schedule.metric", s.metric,
            f"a tracked metric (pruning.metrics): {'|'.join(cfg.metrics)}")
    return cfg


def validate_tracking(cfg: TrackingConfig) -> TrackingConfig:
    """Check every key of ``cfg`` (schedule keys included); raises :class:`PruningConfigError` on the first
    bad value.

    Also normalises ``metrics`` to a list (Hydra gives a ListConfig / tuple), turns a ``schedule``
    mapping into a :class:`ScheduleConfig` and returns ``cfg``.
    """
    p = "pruning."
    require(isinstance(cfg.enabled, bool), p + "enabled", cfg.enabled, "true|false")
    metrics = cfg.metrics
    ok = (isinstance(metrics, (list, tuple)) and len(metrics) > 0
          and all(isinstance(m, str) and m in _names() for m in metrics) and len(set(metrics)) == len(metrics))
    require(ok, p + "metrics", list(metrics) if isinstance(metrics, tuple) else metrics,
            f"a non-empty list without repeats of {'|'.join(_names())}")
    _require_int(cfg, "interval", p, 1, "an integer >= 1 (updates)")
    _require_int(cfg, "gate_interval", p, 1, "an integer >= 1 (updates)")
    _require_int(cfg, "snapshot_interval", p, 0, "an integer >= 0 (updates; 0 = no snapshots)")
    _require_one_of(cfg, "smoothing", SMOOTHINGS, p)
    require(_is_real(cfg.beta) and 0 <= cfg.beta < 1, p + "beta", cfg.beta, "a number in [0, 1)")
    _require_one_of(cfg, "normalize", NORMALIZATIONS, p)
    _require_one_of(cfg, "normalize_by", NORMALIZE_BY, p)
    require(_is_real(cfg.bayes_kappa) and cfg.bayes_kappa >= 0, p + "bayes_kappa", cfg.bayes_kappa,
            "a finite number >= 0")
    _require_one_of(cfg, "grad_acc_variant", GRAD_ACC_VARIANTS, p)
    _require_one_of(cfg, "grad_sq_variant", GRAD_SQ_VARIANTS, p)
    require(isinstance(cfg.prune_latent, bool), p + "prune_latent", cfg.prune_latent, "true|false")
    _require_int(cfg, "seed", p, 0, "an integer >= 0")
    require(isinstance(cfg.schedule, (ScheduleConfig, Mapping)), p + "schedule", cfg.schedule,
            "a mapping of pruning.schedule keys")
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
    require(isinstance(data, Mapping), "pruning", data, "a mapping of pruning keys")
    _reject_unknown(data, TrackingConfig, "pruning.")
    values = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in data.items()}
    if "metrics" in values and values["metrics"] is None:  # metrics: null (the YAML default) = every registered
        del values["metrics"]
    return check_schedule_against(validate_tracking(TrackingConfig(**values)))
