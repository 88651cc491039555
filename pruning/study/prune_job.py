"""The prune job: prune a trained TD-MPC checkpoint by one metric, fine-tune, evaluate, measure.

    python scripts/prune.py checkpoint=RUN_DIR/checkpoint.pt metric=fisher ratio=0.5 finetune_steps=5000

One job = one (checkpoint, metric, ratio, budget, scope, seed, ...). Steps:

1. load the training checkpoint (``weights_only``) with its importance-tracker state (``extras.importance``,
   written by :mod:`pruning.study.integration` during training);
2. score every group with ``metric`` (:meth:`ImportanceTracker.scores`: the tracker's smoothing and
   normalisation - by default ``normalize=mean`` over each group, ``normalize_by=group`` - unless
   overridden) and remove channels for real (:func:`pruning.prune.prune`, Adam moments sliced, target
   Q-ensemble included): with ``budget=flops`` in importance order until the planned-action FLOPs fell by
   ``ratio`` (:mod:`pruning.cost`), with ``budget=channels`` a fraction ``ratio`` of the channels; a
   budget that ``min_channels`` makes unreachable is refused; the return right after pruning is
   recorded (``post_prune.json``);
3. fine-tune online for ``finetune_steps`` env steps with the same trainer, replay buffer and optimisers
   as training, seeded with this job's ``seed`` (training's RNG states are not restored, so seeds
   1, 2, 3 give independent fine-tunes and evaluations of the same checkpoint);
4. evaluate ``eval_episodes`` episodes (planning, no exploration noise), then measure params, FLOPs and
   batch-1 latency of a policy action and a planned action (:mod:`pruning.study.cost_model`);
5. write ``result.json`` (atomically) into the job's run dir.

``ratio=0`` is the dense reference through the same code path. ``dense_return`` is the final eval
return of the training run (its ``eval.csv``), so each job does not spend an extra evaluation on it.

The run dir is claimed first (:mod:`pruning.study.prune_dir`): a job resumes only its own fine-tune
(``checkpoint.pt``, the pruned widths read from it, :func:`pruning.serialize.resize_to_state_dict`) and
is skipped when its dir holds its own ``result.json``, so a sweep re-launched into the same sweep dir
only runs what is missing. Settings: :mod:`pruning.study.prune_config`; command line:
:mod:`pruning.study.prune_cli`.

This module, like :mod:`pruning.study.integration`, is TD-MPC glue and imports ``tdmpc``; the rest of
``pruning`` does not.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pruning.config import PruningConfigError, require, tracking_config
from pruning.groups import model_groups
from pruning.measure import count_params
from pruning.metrics import metric_names, tracked_metrics
from pruning.prune import prune
from pruning.serialize import resize_to_state_dict
from pruning.study.collect import ERROR_FILE, RESULT_FILE
from pruning.study.cost_model import plan_flops, plan_rows, policy_action_flops, tdmpc_latency
from pruning.study.integration import CHECKPOINT_KEY, log_importance_images
from pruning.study.provenance import atomic_write_json, git_commit  # noqa: F401 - git_commit re-exported
from pruning.study.prune_config import (  # noqa: F401 - re-exported: the prune job's settings
    PruneJobConfig,
    job_identity_settings,
    register_configs,
    validate_prune_job,
)
from pruning.study.prune_dir import claim_prune_dir
from pruning.tracker import PARQUET_NAME, ImportanceTracker
from tdmpc.config import TrainConfig
from tdmpc.logger import flatten

POST_PRUNE_FILE = "post_prune.json"  # the return right after pruning, before fine-tuning (kept on resume)


def _dense_return(checkpoint: Path, env_step: int | None = None) -> float | None:
    """Last eval return of the training run that wrote ``checkpoint`` (its ``eval.csv``), if present, at or
    before the checkpoint's ``env_step`` (a run killed after its last checkpoint may have logged later
    evaluations, of weights the checkpoint does not hold)."""
    path = checkpoint.parent / "eval.csv"
    if not path.is_file():
        return None
    import pandas as pd

    evals = pd.read_csv(path)
    if env_step is not None and "env_step" in evals:
        evals = evals[evals["env_step"] <= env_step]
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
    from tdmpc.config import ConfigError

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
        except (PruningConfigError, CheckpointError, ConfigError) as err:
            owned.withdraw(err)  # refused before writing: no manifest naming a checkpoint that gets replaced, and
            raise  # a finished job the claim moved aside comes back



@dataclass
class _Source:
    """The training checkpoint a job starts from."""

    path: Path
    state: dict
    config: dict  # its training config
    tracker_state: dict | None

    @property
    def env_steps(self) -> int:
        return int(self.state["counters"]["env_step"])


@dataclass
class _Dense:
    """The model as trained (before this job prunes it): the reference of every ratio."""

    widths: dict
    params: int
    flops_plan: float
    channels: int


def _load_source(job: PruneJobConfig) -> _Source:
    """Load ``job.checkpoint``; :class:`CheckpointError` (one line) when it cannot serve ``job.metric``."""
    from tdmpc.checkpoint import CheckpointError, load_checkpoint

    path = Path(job.checkpoint).expanduser()
    state = load_checkpoint(path)
    saved_cfg = state.get("config")
    if not isinstance(saved_cfg, dict) or "agent" not in state:
        raise CheckpointError(f"{path} is not a TD-MPC training checkpoint (no config/agent)")
    tracker_state = state.get("extras", {}).get(CHECKPOINT_KEY)
    if job.metric in tracked_metrics() and tracker_state is None:
        raise CheckpointError(
            f"{path} holds no importance-tracker state, needed by metric={job.metric}; train with "
            f"pruning.enabled=true, or use metric=l1|l2|random"
        )
    saved_metrics = (saved_cfg.get("pruning") or {}).get("metrics") or []
    unknown = [m for m in saved_metrics if m not in metric_names()] if isinstance(saved_metrics, list) else []
    if tracker_state is not None and unknown:
        raise CheckpointError(f"{path} was trained tracking metric(s) {unknown} that are not registered in this "
                              f"process: name the module that registers them in CA_PRUNE_PLUGINS (docs/extending.md)")
    trained = tracking_config(saved_cfg.get("pruning") or {}).metrics if tracker_state is not None else []
    if job.metric in tracked_metrics() and job.metric not in trained:
        raise CheckpointError(f"{path} was trained tracking pruning.metrics={trained}, not metric={job.metric}; "
                              f"use one of them, or l1|l2|random, or train with metric {job.metric} tracked")
    return _Source(path, state, saved_cfg, tracker_state)


def _scores(job: PruneJobConfig, model: torch.nn.Module, src: _Source) -> dict[str, torch.Tensor]:
    """Every group's importance by ``job.metric``: training's accumulated statistics for the tracked
    metrics, the trained weights for l1 / l2, this job's seed for random."""
    from tdmpc.checkpoint import CheckpointError

    track_cfg = tracking_config(src.config.get("pruning") or {})
    if job.metric in tracked_metrics():
        tracker = ImportanceTracker(model, track_cfg)
        tracker.load_state_dict(src.tracker_state)
        if not tracker.has_evidence(job.metric):  # all-zero scores would prune by channel index
            raise CheckpointError(f"{src.path} holds no evidence for metric={job.metric}: its training run tracked "
                                  f"{tracker.num_steps} update(s) (it stopped before the first tracked update); "
                                  f"train longer, or use l1|l2|random")
        if job.prune_latent and not track_cfg.prune_latent:
            raise PruningConfigError(
                "invalid config: prune_latent=True; allowed: false (training tracked no latent group: "
                "pruning.prune_latent was false)"
            )
    else:  # independent across seeds for random
        track_cfg = dataclasses.replace(track_cfg, prune_latent=job.prune_latent, seed=job.seed, metrics=[job.metric])
        tracker = ImportanceTracker(model, track_cfg)
    scores = tracker.scores(job.metric, job.smoothing, job.normalize, job.normalize_by)
    tracker.close()  # no gate hooks during fine-tuning
    if not job.prune_latent:
        scores = {name: s for name, s in scores.items() if name != "latent"}
    return scores


def _prune_model(job: PruneJobConfig, trainer: Any, src: _Source, dense: _Dense, run_dir: Path) -> None:
    """Load the trained state, prune it by ``job`` (refusing an unreachable budget) and record the
    return right after pruning (``post_prune.json``)."""
    agent, model = trainer.agent, trainer.agent.model
    planner_cfg = trainer.cfg.planner
    trainer.load_state(src.state, restore_rng=False)  # the checkpoint read before, not read twice
    scores = _scores(job, model, src)
    groups = model_groups(model, job.prune_latent)
    known = sorted({g.component for g in groups})  # a coupling is its own component ("latent")
    bad = sorted(set(job.per_component_ratios or {}) - set(known))
    require(not bad, "per_component_ratios", job.per_component_ratios,
            f"ratios of this model's components {'|'.join(known)} (unknown: {', '.join(bad)})")
    rows = plan_rows(model, planner_cfg) if job.budget == "flops" else None
    prune(model, scores, job.ratio, scope=job.scope, per_component_ratios=job.per_component_ratios or None,
          min_channels=job.min_channels, optimizers=[agent.optim, agent.pi_optim], prune_latent=job.prune_latent,
          cost_rows=rows)
    flops = plan_flops(model, planner_cfg)
    _check_budget_reached(job, dense.flops_plan, flops, dense.channels, _channels(model, job.prune_latent),
                          sum(g.unit for g in groups))  # (pruning keeps every group's unit)
    print(f"[prune] metric={job.metric} ratio={job.ratio} budget={job.budget} scope={job.scope}: params "
          f"{dense.params} -> {count_params(model)['total']}, planned-action FLOPs {dense.flops_plan:.4g} -> "
          f"{flops:.4g}", flush=True)
    atomic_write_json(run_dir / POST_PRUNE_FILE, _post_prune_eval(trainer, job.eval_episodes))


def _run_claimed_job(job: PruneJobConfig, run_dir: Path) -> dict:
    """:func:`run_prune_job` in a claimed run dir."""
    from tdmpc.config import from_dict, validate
    from tdmpc.trainer import Trainer

    validate_prune_job(job)
    result_path = run_dir / RESULT_FILE
    if job.skip_completed and result_path.is_file():
        print(f"[prune] {result_path} exists: skipped (skip_completed=true)", flush=True)
        return json.loads(result_path.read_text())

    src = _load_source(job)
    train_cfg: TrainConfig = validate(from_dict(TrainConfig, _finetune_config(job, src.config, src.env_steps, run_dir)))
    run_dir.mkdir(parents=True, exist_ok=True)
    config_dict = {**dataclasses.asdict(train_cfg), "prune": dataclasses.asdict(job), "trained_env_steps": src.env_steps}
    trainer = Trainer(train_cfg, run_dir, config_dict=config_dict)
    agent, model = trainer.agent, trainer.agent.model
    # The checkpoint may hold a model already pruned during training (pruning.schedule): its widths are
    # the reference ("dense" = as trained).
    if resize_to_state_dict(model, src.state["agent"]["model"]):
        agent.build_optimizers()
    dense = _Dense(model.widths(), count_params(model)["total"], plan_flops(model, train_cfg.planner),
                   _channels(model, job.prune_latent))

    own_ckpt = run_dir / "checkpoint.pt"
    if own_ckpt.is_file():
        # Resuming a killed fine-tune: rebuild the pruned shapes, then Trainer.train() loads the rest.
        own = trainer.resume_state()  # read once, shared with Trainer.train()
        resize_to_state_dict(model, own["agent"]["model"])
        agent.build_optimizers()
        print(f"[prune] resuming fine-tuning from {own_ckpt}", flush=True)
    else:
        _prune_model(job, trainer, src, dense, run_dir)

    result: dict[str, Any] = {}

    def finish(t: Trainer, summary: dict) -> None:
        result.update(_result(job, t, src, dense, config_dict, run_dir))
        summary.update({k: v for k, v in result.items() if isinstance(v, (int, float, str)) and k != "config"})
        summary.update(flatten({"widths": result["widths"], "params_by_component": result["params_by_component"]}))
        # The training run's importance over time, for the metric that pruned this model.
        log_importance_images(t.logger, src.path.parent / PARQUET_NAME, run_dir, metrics=[job.metric],
                              key=f"training_{job.metric}")

    trainer.finish_hooks.append(finish)
    trainer.train()
    atomic_write_json(result_path, result)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    print(f"[prune] return {result['return_mean']:.1f} ± {result['return_std']:.1f} (dense "
          f"{result['dense_return']}), flops_plan {result['flops_plan']:.3g}, latency_plan "
          f"{result['latency_plan_ms']:.2f} ms -> {result_path}", flush=True)
    return result


def _result(job: PruneJobConfig, t: Any, src: _Source, dense: _Dense, config_dict: dict, run_dir: Path) -> dict:
    """``result.json`` of a finished fine-tune: returns, costs, latency, widths, provenance."""
    model, planner_cfg = t.agent.model, t.cfg.planner
    ev = t.last_eval if job.finetune_steps > 0 and t.last_eval is not None else t.evaluate()
    post_file = run_dir / POST_PRUNE_FILE
    post_prune = json.loads(post_file.read_text()) if post_file.is_file() else {}
    torch_state = torch.get_rng_state()
    clock = job.latency_clock
    if clock == "auto":
        clock = "thread" if job.latency_threads == 1 and t.device.type == "cpu" else "wall"
    lat = tdmpc_latency(model, t.agent.planner, num_threads=job.latency_threads,
                        min_run_time=job.latency_min_run_time, seed=job.seed, clock=clock)
    torch.set_rng_state(torch_state)
    counts = count_params(model)
    flops = plan_flops(model, planner_cfg)
    return {
        "task": t.cfg.task, "seed": job.seed, "train_seed": src.config.get("seed"),
        "model_size": t.cfg.model_size, "metric": job.metric, "ratio": job.ratio, "scope": job.scope,
        "prune_latent": job.prune_latent, "finetune_steps": job.finetune_steps,
        "dense_return": _dense_return(src.path, src.env_steps),
        "return_mean": ev["return_mean"], "return_std": ev["return_std"], "eval_episodes": ev["episodes"],
        "params": counts["total"], "params_dense": dense.params, "params_by_component": counts,
        "flops_policy": policy_action_flops(model), "flops_plan": flops, "flops_plan_dense": dense.flops_plan,
        "budget": job.budget,
        # what was actually removed, whatever the budget
        "flops_ratio_achieved": 1 - flops / dense.flops_plan,
        "channel_ratio_achieved": 1 - _channels(model, job.prune_latent) / dense.channels,
        "return_post_prune": post_prune.get("return_mean"), "return_post_prune_std": post_prune.get("return_std"),
        "latency_policy_ms": lat["policy"]["median_ms"], "latency_policy_iqr_ms": lat["policy"]["iqr_ms"],
        "latency_plan_ms": lat["plan"]["median_ms"], "latency_plan_iqr_ms": lat["plan"]["iqr_ms"],
        "latency_threads": job.latency_threads, "latency_clock": clock, "widths": model.widths(),
        "widths_dense": dense.widths, "trained_env_steps": src.env_steps,
        "checkpoint": os.path.abspath(src.path),  # absolute: a report run from elsewhere checks the same file
        "git_commit": git_commit(), "config": config_dict, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


#: Largest shortfall (fraction of the dense FLOPs, absolute) of what a ``budget=flops`` job removed against
#: ``ratio`` that it accepts: the fill lands in [ratio, ratio + 0.5 %] when the budget is reachable
#: (``pruning.prune._fill_cost``, docs/method.md), and the report compares metrics at the requested ratio, so a
#: job that fell short (e.g. ``min_channels`` leaves too little removable) is refused before fine-tuning
#: instead of being labelled with a budget it does not have. A ``budget=channels`` job may fall short by the
#: rounding of each group's count (less than one removal unit per group: a channel, or a latent simplex).
FLOPS_BUDGET_TOLERANCE = 0.01


def _check_budget_reached(job: PruneJobConfig, flops_dense: float, flops: float, channels_dense: int,
                          channels: int, units: int) -> None:
    """Refuse (:class:`PruningConfigError`, one line) when pruning removed less than ``job.ratio`` (beyond the
    tolerance of the budget, above; ``units``: the sum over the prunable groups of their removal units)."""
    if job.per_component_ratios:  # the request is per component, not one ratio
        return
    achieved = 1 - (flops / flops_dense if job.budget == "flops" else channels / channels_dense)
    tolerance = FLOPS_BUDGET_TOLERANCE if job.budget == "flops" else units / channels_dense
    if job.ratio - achieved > tolerance + 1e-12:
        what = "planned-action FLOPs" if job.budget == "flops" else "channels"
        raise PruningConfigError(
            f"invalid config: ratio={job.ratio}; allowed: at most {achieved:.3f} here (pruning removed only "
            f"{100 * achieved:.1f} % of the {what}: min_channels={job.min_channels} and scope={job.scope} "
            f"leave no more removable; lower ratio or min_channels)")


def _channels(model: torch.nn.Module, prune_latent: bool = True) -> int:
    """Prunable channels of ``model``: every hidden group, and the latent if the job may prune it (what
    ``budget=channels`` takes its ratio of)."""
    return sum(g.size for g in model_groups(model, prune_latent))


def _post_prune_eval(trainer: Any, episodes: int) -> dict[str, float]:
    """Evaluate the pruned model before fine-tuning, leaving every RNG as it was (the final evaluation
    then sees the same episodes as without this one)."""
    torch_state, env_state = torch.get_rng_state(), trainer.eval_env.get_rng_state()
    ev = trainer.evaluate(episodes)
    torch.set_rng_state(torch_state)
    trainer.eval_env.set_rng_state(env_state)
    return ev

