"""The prune job's settings (``conf/prune.yaml``): :class:`PruneJobConfig`, their validation, and the
settings that make a job's identity (what its run dir's ``run.json`` records, :mod:`tdmpc.run_dir`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from pruning.config import BUDGETS, NORMALIZATIONS, NORMALIZE_BY, SMOOTHINGS, require
from pruning.metrics import metric_names
from pruning.prune import SCOPES, is_ratio
from tdmpc.config import MAX_SEED, LoggerConfig, WandbConfig, validate_logger


def _prune_logger() -> LoggerConfig:
    return LoggerConfig(wandb=WandbConfig(job_type="prune"))


@dataclass
class PruneJobConfig:
    """One prune job (``conf/prune.yaml``); every key is validated by :func:`validate_prune_job`."""

    checkpoint: str = ""  # a training run's checkpoint.pt (required)
    metric: str = "fisher"  # a registered metric (pruning.metrics.metric_names())
    ratio: float = 0.5  # fraction of the budget to remove, in [0, 1); 0 = dense reference
    # flops: remove channels in importance order until the planned-action FLOPs fell by `ratio` (scope
    # global); channels: remove `ratio` of the scored channels (any scope)
    budget: str = "flops"
    scope: str = "global"  # global | per_component | per_group
    # with scope=per_component, e.g. per_component_ratios={encoder:0.25,qs:0.5} (None: none; a None
    # default, not {}, so that Hydra replaces it by the given dict instead of merging into a struct)
    per_component_ratios: Any = None  # dict[str, float]; Any: Hydra cannot assign a dict to an Optional[Dict] None
    min_channels: int = 1  # channels every group keeps at least
    prune_latent: bool = True  # also prune the latent width shared by all components
    smoothing: str | None = None  # ema | cumulative; None: the tracker's setting from training
    normalize: str | None = None  # none | mean | max | sum; None: the tracker's setting from training
    # component | group (each layer's width): what `normalize` is over; None: the tracker's setting
    normalize_by: str | None = None
    finetune_steps: int = 5000  # env steps of online fine-tuning after pruning (0: none)
    eval_episodes: int = 10
    seed: int = 1  # seeds fine-tuning and evaluation (not the checkpoint)
    device: str = "auto"
    num_threads: int = 0  # torch CPU threads while fine-tuning; 0 = torch's default
    latency_threads: int = 1  # torch threads for the latency measurement
    latency_min_run_time: float = 1.0  # seconds per latency measurement (Timer.blocked_autorange)
    # wall | thread | auto (thread CPU time when single-threaded on the CPU: on a shared machine, or with
    # other jobs running side by side, it leaves out the time spent waiting for a core).
    latency_clock: str = "auto"
    skip_completed: bool = True  # do nothing when the run dir already holds result.json
    run_dir: str | None = None  # None: Hydra's run dir
    logger: LoggerConfig = field(default_factory=_prune_logger)


def validate_prune_job(cfg: PruneJobConfig) -> PruneJobConfig:
    """Check every key; raises :class:`PruningConfigError` with one line naming key, value, allowed."""
    require(bool(cfg.checkpoint), "checkpoint", cfg.checkpoint, "path of a training run's checkpoint.pt")
    require(cfg.metric in metric_names(), "metric", cfg.metric, "|".join(metric_names()))
    require(is_ratio(cfg.ratio), "ratio", cfg.ratio, "a number in [0, 1)")
    require(cfg.scope in SCOPES, "scope", cfg.scope, "|".join(SCOPES))
    require(cfg.budget in BUDGETS, "budget", cfg.budget, "|".join(BUDGETS))
    require(cfg.budget == "channels" or cfg.scope == "global", "scope", cfg.scope,
            "global (budget=flops ranks all groups together; use budget=channels for other scopes)")
    require(cfg.per_component_ratios is None or isinstance(cfg.per_component_ratios, dict), "per_component_ratios",
            cfg.per_component_ratios, "a mapping component: ratio, e.g. {encoder:0.25,qs:0.5}")
    for comp, r in (cfg.per_component_ratios or {}).items():
        require(is_ratio(r), f"per_component_ratios.{comp}", r, "a number in [0, 1)")
    require(not cfg.per_component_ratios or cfg.scope == "per_component", "scope", cfg.scope,
             "per_component (per_component_ratios is set)")
    require(isinstance(cfg.min_channels, int) and cfg.min_channels >= 1, "min_channels", cfg.min_channels,
             "an integer >= 1")
    require(cfg.smoothing is None or cfg.smoothing in SMOOTHINGS, "smoothing", cfg.smoothing,
             "null|" + "|".join(SMOOTHINGS))
    require(cfg.normalize is None or cfg.normalize in NORMALIZATIONS, "normalize", cfg.normalize,
             "null|" + "|".join(NORMALIZATIONS))
    require(cfg.normalize_by is None or cfg.normalize_by in NORMALIZE_BY, "normalize_by", cfg.normalize_by,
            "null|" + "|".join(NORMALIZE_BY))
    require(isinstance(cfg.finetune_steps, int) and cfg.finetune_steps >= 0, "finetune_steps",
             cfg.finetune_steps, "an integer >= 0")
    require(isinstance(cfg.eval_episodes, int) and cfg.eval_episodes >= 1, "eval_episodes", cfg.eval_episodes,
             "an integer >= 1")
    require(isinstance(cfg.latency_threads, int) and cfg.latency_threads >= 1, "latency_threads",
             cfg.latency_threads, "an integer >= 1")
    require(cfg.latency_clock in ("auto", "wall", "thread"), "latency_clock", cfg.latency_clock, "auto|wall|thread")
    require(isinstance(cfg.latency_min_run_time, (int, float)) and math.isfinite(cfg.latency_min_run_time)
            and cfg.latency_min_run_time > 0, "latency_min_run_time", cfg.latency_min_run_time, "a finite number > 0")
    # the fine-tune's own settings, checked before the run dir is claimed (a claim may move a finished job aside)
    require(isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool) and 0 <= cfg.seed <= MAX_SEED, "seed", cfg.seed,
            f"an integer 0 .. {MAX_SEED}")
    require(isinstance(cfg.num_threads, int) and cfg.num_threads >= 0, "num_threads", cfg.num_threads,
            "an integer >= 0 (0 = torch default)")
    validate_logger(cfg.logger)
    require(cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith("cuda"), "device", cfg.device,
             "auto|cpu|cuda|cuda:N")
    return cfg



#: PruneJobConfig keys that do not change a job's result (left out of its identity); the checkpoint enters
#: the identity by the sha256 of its bytes (``source_sha256`` of the run dir's manifest), not by its path.
#: latency_min_run_time only sets how long the latency is timed (its precision, like num_threads its speed).
_NOT_IDENTITY = ("checkpoint", "run_dir", "skip_completed", "logger", "num_threads", "device", "latency_min_run_time")


def job_identity_settings(job: PruneJobConfig) -> dict:
    """The settings that make a prune job's result (its run dir's identity, :mod:`tdmpc.run_dir`)."""
    settings = {k: v for k, v in dataclasses.asdict(job).items() if k not in _NOT_IDENTITY}
    settings["per_component_ratios"] = settings["per_component_ratios"] or {}  # None and {} prune alike
    return settings


def register_configs() -> None:
    """Register :class:`PruneJobConfig` as ``prune_schema`` (the schema of ``conf/prune.yaml``)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="prune_schema", node=PruneJobConfig)


def _to_job(cfg: Any) -> PruneJobConfig:
    from omegaconf import OmegaConf

    from tdmpc.config import from_dict

    data = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    data = {k: v for k, v in data.items() if k != "hydra"}
    return from_dict(PruneJobConfig, data)

