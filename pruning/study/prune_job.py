"""The prune job: prune a trained TD-MPC checkpoint by one metric, fine-tune, evaluate, measure.

    python scripts/prune.py checkpoint=RUN_DIR/checkpoint.pt metric=fisher ratio=0.5 finetune_steps=5000

One job = one (checkpoint, metric, ratio, scope, seed). Steps:

1. load the training checkpoint (``weights_only``) with its importance-tracker state (``extras.importance``,
   written by :mod:`pruning.study.integration` during training);
2. score every group with ``metric`` (:meth:`ImportanceTracker.scores`, the tracker's smoothing and
   per-component normalisation unless overridden) and remove ``ratio`` of the channels for real
   (:func:`pruning.prune.prune`, Adam moments sliced), target Q-ensemble included;
3. fine-tune online for ``finetune_steps`` env steps with the same trainer, replay buffer and optimisers
   as training, seeded with this job's ``seed`` (training's RNG states are not restored, so seeds
   1, 2, 3 give independent fine-tunes and evaluations of the same checkpoint);
4. evaluate ``eval_episodes`` episodes (planning, no exploration noise), then measure params, FLOPs and
   batch-1 latency of a policy action and a planned action (:mod:`pruning.measure`);
5. write ``result.json`` (atomically) into the job's run dir.

``ratio=0`` is the dense reference through the same code path. ``dense_return`` is the final eval
return of the training run (its ``eval.csv``), so each job does not spend an extra evaluation on it.

A job killed during fine-tuning resumes from its own ``checkpoint.pt`` (the pruned widths are read from
it, :func:`pruning.serialize.resize_to_state_dict`); a job whose ``result.json`` exists is skipped, so a
sweep can be re-launched into the same sweep dir and only runs what is missing.

This module, like :mod:`pruning.study.integration`, is TD-MPC glue and imports ``tdmpc``; the rest of
``pruning`` does not.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pruning.config import (
    BUDGETS,
    NORMALIZATIONS,
    NORMALIZE_BY,
    SMOOTHINGS,
    PruningConfigError,
    require,
    tracking_config,
)
from pruning.groups import model_groups
from pruning.measure import count_params
from pruning.metrics import metric_names, tracked_metrics
from pruning.prune import SCOPES, is_ratio, prune
from pruning.serialize import resize_to_state_dict
from pruning.study.cost_model import plan_flops, plan_rows, policy_action_flops, tdmpc_latency
from pruning.study.integration import CHECKPOINT_KEY, log_importance_images
from pruning.study.report import ERROR_FILE, RESULT_FILE
from pruning.tracker import PARQUET_NAME, ImportanceTracker
from tdmpc.config import LoggerConfig, TrainConfig, WandbConfig
from tdmpc.logger import flatten

ROOT = Path(__file__).resolve().parents[2]
POST_PRUNE_FILE = "post_prune.json"  # the return right after pruning, before fine-tuning (kept on resume)


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
    require(cfg.latency_min_run_time > 0, "latency_min_run_time", cfg.latency_min_run_time, "a number > 0")
    require(cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith("cuda"), "device", cfg.device,
             "auto|cpu|cuda|cuda:N")
    return cfg


def git_commit() -> str:
    """``HEAD`` of the checkout this code runs from (``+dirty`` with uncommitted changes), or ``unknown``."""
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _atomic_write_json(path: Path, data: dict) -> None:
    from tdmpc.logger import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, default=float) + "\n")


def _dense_return(checkpoint: Path) -> float | None:
    """Final eval return of the training run that wrote ``checkpoint`` (its ``eval.csv``), if present."""
    path = checkpoint.parent / "eval.csv"
    if not path.is_file():
        return None
    import pandas as pd

    evals = pd.read_csv(path)
    return float(evals["return_mean"].iloc[-1]) if len(evals) else None


def _finetune_config(job: PruneJobConfig, train_cfg: dict, trained_env_steps: int, run_dir: Path) -> dict:
    """The training config of the fine-tuning phase, as a plain dict (for :class:`TrainConfig`)."""
    cfg = dict(train_cfg)
    cfg.pop("pruning", None)  # no tracking while fine-tuning
    huge = 2**62  # evaluate and checkpoint only at the end of fine-tuning
    cfg.update(seed=job.seed, steps=trained_env_steps + job.finetune_steps, eval_episodes=job.eval_episodes,
               eval_freq=huge, checkpoint_freq=max(1000, job.finetune_steps // 2) if job.finetune_steps else huge,
               device=job.device, num_threads=job.num_threads, resume=True, run_dir=str(run_dir),
               logger=dataclasses.asdict(job.logger))
    return cfg


#: PruneJobConfig keys that do not change a job's result (left out of its identity); the checkpoint enters
#: the identity by the sha256 of its bytes (``source_sha256`` of the run dir's manifest), not by its path.
_NOT_IDENTITY = ("checkpoint", "run_dir", "skip_completed", "logger", "num_threads", "device")


def job_identity_settings(job: PruneJobConfig) -> dict:
    """The settings that make a prune job's result (its run dir's identity, :mod:`tdmpc.run_dir`)."""
    settings = {k: v for k, v in dataclasses.asdict(job).items() if k not in _NOT_IDENTITY}
    settings["per_component_ratios"] = settings["per_component_ratios"] or {}  # None and {} prune alike
    return settings


def claim_prune_dir(job: PruneJobConfig, run_dir: Path) -> Any:
    """Claim ``run_dir`` for ``job`` (``tdmpc.run_dir.claim``, kind ``prune``): refuses, with one line, a
    training run's dir (11.1) and a dir of another prune job or of another source checkpoint, so that a
    ``result.json`` found there is this job's (identity-based skipping) and ``checkpoint.pt`` its own
    fine-tune. A dir without ``run.json`` (from before manifests) is adopted only when its checkpoint or
    result was written by the same job settings."""
    from tdmpc.checkpoint import CheckpointError
    from tdmpc.run_dir import claim, file_sha256, identity

    ckpt_path = Path(job.checkpoint).expanduser()
    if not ckpt_path.is_file():
        raise CheckpointError(f"checkpoint not found: {ckpt_path}")
    settings = job_identity_settings(job)
    # A dir named by Hydra from the job's settings (run_dir unset) that holds another prune job - e.g. a
    # sweep re-launched after its training run went on, so the checkpoint changed - is superseded: the
    # old job is moved aside (reports leave it out) and this one runs anew. A dir the user named is refused.
    return claim(run_dir, "prune", identity(settings), settings=settings, source_sha256=file_sha256(ckpt_path),
                 check_unowned=lambda d: _check_unowned_prune_dir(d, settings),
                 hint="use another run dir (run_dir=... or hydra.run.dir=...)",
                 defaults=job_identity_settings(PruneJobConfig()), supersede=not job.run_dir)


def _check_unowned_prune_dir(run_dir: Path, settings: dict) -> str | None:
    """Why a prune job may not adopt a dir without ``run.json`` (``None``: it may)."""
    from tdmpc.checkpoint import load_checkpoint

    if (run_dir / RESULT_FILE).is_file():
        try:
            saved = json.loads((run_dir / RESULT_FILE).read_text()).get("config", {}).get("prune")
        except (OSError, ValueError, AttributeError):
            saved = None
    elif (run_dir / "checkpoint.pt").is_file():
        saved = (load_checkpoint(run_dir / "checkpoint.pt").get("config") or {}).get("prune")
        if saved is None:
            return "it holds a training run's checkpoint.pt, not this prune job's"
    else:
        return None
    if not isinstance(saved, dict):
        return "it holds files of another job"
    from tdmpc.run_dir import canonical_json

    old = {k: v for k, v in saved.items() if k not in _NOT_IDENTITY}
    return None if canonical_json(old) == canonical_json(settings) else "it holds another prune job (other settings)"


def run_prune_job(job: PruneJobConfig, run_dir: str | Path,
                  on_claimed: Callable[[Path], None] | None = None) -> dict:
    """Run one prune job into ``run_dir`` and return its result (see the module docstring).

    The run dir is claimed first (:func:`claim_prune_dir`; ``tdmpc.run_dir.RunDirError`` when it belongs
    to another job) and locked while the job runs; ``on_claimed(run_dir)`` then runs (the CLI writes
    Hydra's ``.hydra/`` record there: only into a dir that is this job's). Raises
    :class:`PruningConfigError` for bad settings (a budget that cannot be reached included) and
    ``tdmpc.checkpoint.CheckpointError`` for a missing, corrupt or foreign checkpoint, before anything
    but the run dir's manifest is written.
    """
    from tdmpc.checkpoint import CheckpointError

    validate_prune_job(job)
    run_dir = Path(run_dir)
    with claim_prune_dir(job, run_dir) as owned:
        if owned.moved_to is not None:
            print(f"[prune] {run_dir} held another prune job ({owned.moved_because}): moved it aside to "
                  f"{owned.moved_to}; running this job anew", flush=True)
        try:
            if on_claimed is not None:
                on_claimed(run_dir)
            return _run_claimed_job(job, run_dir)
        except (PruningConfigError, CheckpointError):
            owned.withdraw()  # refused before writing: no manifest naming a checkpoint that gets replaced
            raise


def _run_claimed_job(job: PruneJobConfig, run_dir: Path) -> dict:
    """:func:`run_prune_job` in a claimed run dir."""
    from tdmpc.checkpoint import CheckpointError, load_checkpoint
    from tdmpc.config import from_dict, validate
    from tdmpc.trainer import Trainer

    validate_prune_job(job)
    run_dir = Path(run_dir)
    result_path = run_dir / RESULT_FILE
    if job.skip_completed and result_path.is_file():
        print(f"[prune] {result_path} exists: skipped (skip_completed=true)", flush=True)
        return json.loads(result_path.read_text())

    ckpt_path = Path(job.checkpoint).expanduser()
    state = load_checkpoint(ckpt_path)
    saved_cfg = state.get("config")
    if not isinstance(saved_cfg, dict) or "agent" not in state:
        raise CheckpointError(f"{ckpt_path} is not a TD-MPC training checkpoint (no config/agent)")
    extras = state.get("extras", {})
    tracker_state = extras.get(CHECKPOINT_KEY)
    if job.metric in tracked_metrics() and tracker_state is None:
        raise CheckpointError(
            f"{ckpt_path} holds no importance-tracker state, needed by metric={job.metric}; train with "
            f"pruning.enabled=true, or use metric=l1|l2|random"
        )
    trained = tracking_config(saved_cfg.get("pruning") or {}).metrics if tracker_state is not None else []
    if job.metric in tracked_metrics() and job.metric not in trained:
        raise CheckpointError(f"{ckpt_path} was trained tracking pruning.metrics={trained}, not metric={job.metric}; "
                              f"use one of them, or l1|l2|random, or train with metric {job.metric} tracked")
    trained_env_steps = int(state["counters"]["env_step"])
    ft_dict = _finetune_config(job, saved_cfg, trained_env_steps, run_dir)
    train_cfg: TrainConfig = validate(from_dict(TrainConfig, ft_dict))

    run_dir.mkdir(parents=True, exist_ok=True)
    config_dict = {**dataclasses.asdict(train_cfg), "prune": dataclasses.asdict(job),
                   "trained_env_steps": trained_env_steps}
    trainer = Trainer(train_cfg, run_dir, config_dict=config_dict)
    agent, model = trainer.agent, trainer.agent.model
    # The checkpoint may hold a model already pruned during training (pruning.schedule): its widths are
    # the reference ("dense" = as trained).
    if resize_to_state_dict(model, state["agent"]["model"]):
        agent.build_optimizers()
    widths_dense = model.widths()
    params_dense = count_params(model)["total"]
    flops_dense = plan_flops(model, train_cfg.planner)
    channels_dense = _channels(model)

    own_ckpt = run_dir / "checkpoint.pt"
    if own_ckpt.is_file():
        # Resuming a killed fine-tune: rebuild the pruned shapes, then Trainer.train() loads the rest.
        own = trainer.resume_state()  # read once, shared with Trainer.train()
        resize_to_state_dict(model, own["agent"]["model"])
        agent.build_optimizers()
        print(f"[prune] resuming fine-tuning from {own_ckpt}", flush=True)
    else:
        trainer.load_state(state, restore_rng=False)  # the checkpoint read above, not read twice
        track_cfg = tracking_config(saved_cfg.get("pruning") or {})
        if job.metric in tracked_metrics():
            # Accumulated gradient statistics of training, for the groups training tracked.
            tracker = ImportanceTracker(model, track_cfg)
            tracker.load_state_dict(tracker_state)
            if job.prune_latent and not track_cfg.prune_latent:
                raise PruningConfigError(
                    "invalid config: prune_latent=True; allowed: false (training tracked no latent group: "
                    "pruning.prune_latent was false)"
                )
        else:
            # l1 / l2 from the trained weights, random from this job's seed (independent across seeds).
            track_cfg = dataclasses.replace(track_cfg, prune_latent=job.prune_latent, seed=job.seed,
                                            metrics=[job.metric])
            tracker = ImportanceTracker(model, track_cfg)
        scores = tracker.scores(job.metric, job.smoothing, job.normalize, job.normalize_by)
        tracker.close()  # no gate hooks during fine-tuning
        if not job.prune_latent:
            scores = {name: s for name, s in scores.items() if name != "latent"}
        rows = plan_rows(model, train_cfg.planner) if job.budget == "flops" else None
        known = sorted(model.components)
        bad = sorted(set(job.per_component_ratios or {}) - set(known))
        require(not bad, "per_component_ratios", job.per_component_ratios,
                f"ratios of this model's components {'|'.join(known)} (unknown: {', '.join(bad)})")
        prune(model, scores, job.ratio, scope=job.scope, per_component_ratios=job.per_component_ratios or None,
              min_channels=job.min_channels, optimizers=[agent.optim, agent.pi_optim], prune_latent=job.prune_latent,
              cost_rows=rows)
        _check_budget_reached(job, flops_dense, plan_flops(model, train_cfg.planner), channels_dense,
                              _channels(model))
        print(f"[prune] metric={job.metric} ratio={job.ratio} budget={job.budget} scope={job.scope}: params "
              f"{params_dense} -> {count_params(model)['total']}, planned-action FLOPs {flops_dense:.4g} -> "
              f"{plan_flops(model, train_cfg.planner):.4g}", flush=True)
        _atomic_write_json(run_dir / POST_PRUNE_FILE, _post_prune_eval(trainer, job.eval_episodes))

    result: dict[str, Any] = {}

    def finish(t: Trainer, summary: dict) -> None:
        ev = t.last_eval if job.finetune_steps > 0 and t.last_eval is not None else t.evaluate()
        post_file = run_dir / POST_PRUNE_FILE
        post_prune = json.loads(post_file.read_text()) if post_file.is_file() else {}
        torch_state = torch.get_rng_state()
        clock = job.latency_clock
        if clock == "auto":
            clock = "thread" if job.latency_threads == 1 and t.device.type == "cpu" else "wall"
        lat = tdmpc_latency(model, agent.planner, num_threads=job.latency_threads,
                            min_run_time=job.latency_min_run_time, seed=job.seed, clock=clock)
        torch.set_rng_state(torch_state)
        counts = count_params(model)
        result.update({
            "task": train_cfg.task, "seed": job.seed, "train_seed": saved_cfg.get("seed"),
            "model_size": train_cfg.model_size, "metric": job.metric, "ratio": job.ratio, "scope": job.scope,
            "prune_latent": job.prune_latent, "finetune_steps": job.finetune_steps,
            "dense_return": _dense_return(ckpt_path),
            "return_mean": ev["return_mean"], "return_std": ev["return_std"], "eval_episodes": ev["episodes"],
            "params": counts["total"], "params_dense": params_dense, "params_by_component": counts,
            "flops_policy": policy_action_flops(model), "flops_plan": plan_flops(model, train_cfg.planner),
            "flops_plan_dense": flops_dense, "budget": job.budget,
            # what was actually removed, whatever the budget (min_channels can make it far less)
            "flops_ratio_achieved": 1 - plan_flops(model, train_cfg.planner) / flops_dense,
            "channel_ratio_achieved": 1 - _channels(model) / channels_dense,
            "return_post_prune": post_prune.get("return_mean"), "return_post_prune_std": post_prune.get("return_std"),
            "latency_policy_ms": lat["policy"]["median_ms"], "latency_policy_iqr_ms": lat["policy"]["iqr_ms"],
            "latency_plan_ms": lat["plan"]["median_ms"], "latency_plan_iqr_ms": lat["plan"]["iqr_ms"],
            "latency_threads": job.latency_threads, "latency_clock": clock, "widths": model.widths(), "widths_dense": widths_dense,
            "trained_env_steps": trained_env_steps, "checkpoint": str(ckpt_path),
            "git_commit": git_commit(), "config": config_dict, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
        summary.update({k: v for k, v in result.items() if isinstance(v, (int, float, str)) and k != "config"})
        summary.update(flatten({"widths": result["widths"], "params_by_component": counts}))
        # The training run's importance over time, for the metric that pruned this model.
        log_importance_images(t.logger, ckpt_path.parent / PARQUET_NAME, run_dir, metrics=[job.metric],
                              key=f"training_{job.metric}")

    trainer.finish_hooks.append(finish)
    trainer.train()
    _atomic_write_json(result_path, result)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    print(f"[prune] return {result['return_mean']:.1f} ± {result['return_std']:.1f} (dense "
          f"{result['dense_return']}), flops_plan {result['flops_plan']:.3g}, latency_plan "
          f"{result['latency_plan_ms']:.2f} ms -> {result_path}", flush=True)
    return result


#: Largest shortfall (fraction of the budget, absolute) of what pruning removed against ``ratio`` that a
#: job accepts; beyond it the result would be labelled with a budget it does not have (e.g. min_channels
#: larger than the layers), so the job is refused before fine-tuning. FLOPs budgets land within 1 %;
#: channel budgets round each group's count down, at most one channel per group.
BUDGET_TOLERANCE = 0.05


def _check_budget_reached(job: PruneJobConfig, flops_dense: float, flops: float, channels_dense: int,
                          channels: int) -> None:
    """Refuse (:class:`PruningConfigError`, one line) when pruning removed far less than ``job.ratio``."""
    if job.per_component_ratios:  # the request is per component, not one ratio
        return
    achieved = 1 - (flops / flops_dense if job.budget == "flops" else channels / channels_dense)
    if job.ratio - achieved > BUDGET_TOLERANCE:
        what = "planned-action FLOPs" if job.budget == "flops" else "channels"
        raise PruningConfigError(
            f"invalid config: ratio={job.ratio}; allowed: at most {achieved:.3f} here (pruning removed only "
            f"{100 * achieved:.1f} % of the {what}: min_channels={job.min_channels} and scope={job.scope} "
            f"leave no more removable; lower ratio or min_channels)")


def _channels(model: torch.nn.Module) -> int:
    """Prunable channels of ``model``: every hidden group and the latent."""
    return sum(g.size for g in model_groups(model))


def _post_prune_eval(trainer: Any, episodes: int) -> dict[str, float]:
    """Evaluate the pruned model before fine-tuning, leaving every RNG as it was (the final evaluation
    then sees the same episodes as without this one)."""
    torch_state, env_state = torch.get_rng_state(), trainer.eval_env.get_rng_state()
    ev = trainer.evaluate(episodes)
    torch.set_rng_state(torch_state)
    trainer.eval_env.set_rng_state(env_state)
    return ev


def record_failure(run_dir: str | Path, err: BaseException) -> Path:
    """Write ``error.json`` (type, message, traceback) so that ``scripts/report.py`` lists the failed run."""
    import traceback

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ERROR_FILE
    _atomic_write_json(path, {"error": type(err).__name__, "message": str(err),
                              "traceback": "".join(traceback.format_exception(err))})
    return path


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


def run_prune_job_cli(cfg: Any) -> float | None:
    """Entry point of ``scripts/prune.py``: one-line errors, and failure records in a multirun.

    User errors (bad settings, missing/corrupt checkpoint) exit 2 with one line in a single run; in a
    multirun every failure is written to the job's ``error.json`` and the sweep goes on (the
    ``FailedJobsCallback`` exits 1 at the end). Returns the job's eval return (for sweepers).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from tdmpc.checkpoint import CheckpointError
    from tdmpc.cli import fail, save_hydra_config
    from tdmpc.config import ConfigError
    from tdmpc.run_dir import RunDirError

    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    multirun = hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN
    run_dir: Path | None = None
    try:
        job = validate_prune_job(_to_job(cfg))
        run_dir = Path(job.run_dir) if job.run_dir else Path(hydra_cfg.runtime.output_dir)
        if multirun and job.logger.wandb.group is None:
            job.logger.wandb.group = Path(hydra_cfg.sweep.dir).name  # group = sweep name
        return run_prune_job(job, run_dir, on_claimed=lambda d: save_hydra_config(cfg, d))["return_mean"]
    except (PruningConfigError, ConfigError, CheckpointError, RunDirError) as err:
        if not multirun:
            fail(str(err))
        err_to_record: BaseException = err
    except Exception as err:  # noqa: BLE001 - a crashing job must not stop the sweep
        if not multirun:
            raise
        err_to_record = err
    out = run_dir or (Path(hydra_cfg.runtime.output_dir) if hydra_cfg is not None else Path("."))
    path = record_failure(out, err_to_record)
    print(f"error: {err_to_record} (job failed, recorded in {path})", file=sys.stderr, flush=True)
    return None
