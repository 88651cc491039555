"""Glue between :class:`~pruning.tracker.ImportanceTracker` and ``tdmpc.trainer.Trainer``.

The trainer knows nothing about pruning; it offers ``update_hooks`` (called after every gradient update
with ``(trainer, losses)``) and ``checkpoint_extras`` (objects saved in / restored from its checkpoint).
:func:`attach_tracker` uses both:

- the hook calls ``tracker.step(trainer.updates)`` after each update, when the gradients of the update
  are still in ``.grad``: world-model loss gradients for encoder / dynamics / reward / qs and policy-loss
  gradients for the policy, both after gradient-norm clipping (see ``tdmpc.agent.TDMPC``);
- the checkpoint extra flushes the pending snapshots to ``importance.parquet`` right before its state is
  taken, i.e. at every checkpoint (the trainer always checkpoints at the end of training too), so the
  file and the checkpoint agree and a resumed run rewrites exactly the rows after the checkpoint.

Pruning during training (:func:`attach_schedule`, :class:`ScheduledPruner`): a second update hook,
after the tracker's, prunes the model at the env steps of a :class:`~pruning.schedule.PruningSchedule`
(``pruning.schedule``), scored by the tracker; training goes on with the smaller model (fine-tuning
after ``end_step``). See ``docs/method.md``, "Pruning during training".

Resuming a pruned run: the trainer builds the dense architecture, so :func:`tracker_callback` first
resizes the model to the checkpoint's shapes (:func:`resize_for_resume`), then builds the tracker (its
groups depend on the widths), then the schedule; ``Trainer.train()`` loads the weights, optimiser
states and both extras.

This module, like :mod:`pruning.study.prune_job`, is TD-MPC glue and imports ``tdmpc`` (lazily).
"""

from __future__ import annotations

import bisect
import dataclasses
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pruning.config import ScheduleConfig, TrackingConfig, check_schedule_against, schedule_config
from pruning.measure import count_params
from pruning.prune import prune
from pruning.schedule import PruningSchedule, incremental_ratio
from pruning.serialize import resize_to_state_dict
from pruning.tracker import ImportanceTracker

#: Name of the tracker's entry in the trainer checkpoint's ``extras``.
CHECKPOINT_KEY = "importance"
#: Name of the schedule's entry in the trainer checkpoint's ``extras``.
SCHEDULE_KEY = "prune_schedule"
#: Logger stream (``<run dir>/prune.csv``) with one row per prune.
PRUNE_STREAM = "prune"
SCHEDULE_FORMAT = "ca-prune/prune-schedule/v1"
#: Schedule keys that must match for a checkpointed schedule state to be continued.
_SCHEDULE_STATE_KEYS = ("kind", "target", "start_step", "end_step", "every", "metric", "scope", "min_channels",
                        "smoothing", "normalize", "normalize_by")  # the last three: how channels are ranked


class CheckpointedTracker:
    """``checkpoint_extras`` adapter: ``state_dict()`` flushes the snapshots, then returns the state."""

    def __init__(self, tracker: ImportanceTracker):
        self.tracker = tracker

    def state_dict(self) -> dict:
        self.tracker.flush()
        return self.tracker.state_dict()

    def load_state_dict(self, state: Mapping) -> None:
        from tdmpc.checkpoint import CheckpointError

        try:
            self.tracker.load_state_dict(state)
        except ValueError as err:  # a one-line user error (exit 2 via tdmpc.cli), not a traceback
            raise CheckpointError(f"{err}; use a new run dir or set resume=false") from err


def attach_tracker(trainer: Any, cfg: TrackingConfig) -> ImportanceTracker | None:
    """Track importance of ``trainer.agent.model`` during ``trainer.train()``; ``None`` if disabled."""
    if not cfg.enabled:
        return None
    tracker = ImportanceTracker(trainer.agent.model, cfg, run_dir=trainer.run_dir,
                                samples=trainer.cfg.optim.batch_size)

    def hook(t: Any, losses: dict) -> None:
        tracker.step(t.updates)

    trainer.update_hooks.append(hook)
    trainer.checkpoint_extras[CHECKPOINT_KEY] = CheckpointedTracker(tracker)
    def finish(t: Any, summary: dict) -> None:
        # the scores at the end of training, also for a run shorter than snapshot_interval (whose file was empty).
        # Taken after the final checkpoint: a run resumed from it for more steps drops this row again (rows past the
        # checkpoint's written_through are rewritten), so it equals an uninterrupted run.
        if cfg.snapshot_interval and tracker.num_steps and t.updates % cfg.snapshot_interval:
            tracker.snapshot(t.updates)
        log_importance_images(t.logger, tracker.flush(), t.run_dir)

    trainer.finish_hooks.append(finish)
    return tracker


def log_importance_images(logger: Any, parquet: Path | None, out: Path, metrics: list[str] | None = None,
                          key: str = "run") -> list[Path]:
    """Plot the importance heat-maps of ``parquet`` (:func:`pruning.study.report.plot_run_importance`) into
    ``out`` and log them to W&B as ``importance/<name>`` images. Only when the run logs to W&B (plotting
    every tiny run would cost a matplotlib import each); returns the written files."""
    if getattr(logger, "wandb_run", None) is None or parquet is None or not Path(parquet).is_file():
        return []
    from pruning.snapshot_file import read_table
    from pruning.study.report import plot_run_importance

    try:
        read_table(Path(parquet))
    except Exception as err:  # a damaged file (it may be another run's: left where it is) costs the images only
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"warning: {parquet} is unreadable ({reason}); importance images not logged", file=sys.stderr,
              flush=True)
        return []

    paths = plot_run_importance(parquet, out, metrics=metrics, key=key)
    for path in paths:
        if path.suffix == ".png":
            logger.log_image(f"importance/{path.stem}", path)
    return paths


class ScheduledPruner:
    """Prunes ``trainer.agent.model`` at the scheduled env steps (an update hook and a checkpoint extra).

    Scheduled steps are :meth:`PruningSchedule.prune_steps` (env steps). ``trainer.env_step`` advances
    by ``action_repeat`` (and many updates share one env step while pretraining), so a step is *due*
    once ``env_step >= step``; when several are due at once, one prune goes to the cumulative ratio of
    the latest of them. The cumulative ratio ``r`` counts *original* channels of the scored groups
    (all tracker groups); :func:`pruning.schedule.incremental_ratio` turns it into the ratio of the
    current model: over all channels (``scope=global``) or per component (``per_component``, as
    ``per_component_ratios``). Prunes happen in the update hook, after the tracker read the update's
    gradients; a step due before the first update (during seeding) is pruned at the first update that gave the
    metric evidence (the first tracked one: later than the first update with ``interval`` or ``gate_interval`` > 1).

    State (checkpoint ``extras.prune_schedule``): the original channel counts, the number of scheduled
    steps consumed and one row per prune (what ``prune.csv`` holds).
    """

    def __init__(self, trainer: Any, tracker: ImportanceTracker, cfg: ScheduleConfig):
        self.trainer, self.tracker = trainer, tracker
        self.cfg = schedule_config(cfg)
        c = self.cfg
        self.schedule = PruningSchedule(kind=c.kind, target=c.target, start_step=c.start_step, end_step=c.end_step,
                                        every=c.every)
        self.steps = self.schedule.prune_steps()
        self.original_total, self.original_per_component = self._channels()
        self.done = 0  # scheduled steps consumed
        self.history: list[dict] = []  # one row per prune

    def _channels(self) -> tuple[int, dict[str, int]]:
        """Current channel count of the scored groups: total and per component."""
        per: dict[str, int] = {}
        for g in self.tracker.groups:
            per[g.component] = per.get(g.component, 0) + g.size
        return sum(per.values()), per

    # ------------------------------------------------------------------------------ pruning
    def due(self, env_step: int) -> int | None:
        """The latest scheduled step ``<= env_step`` not consumed yet, or ``None``."""
        k = bisect.bisect_right(self.steps, env_step)
        return self.steps[k - 1] if k > self.done else None

    def __call__(self, trainer: Any, losses: Mapping) -> None:
        step = self.due(trainer.env_step)
        # no evidence yet (interval or gate_interval > 1 left the first updates untracked): all-zero scores
        # would prune by channel index, so the due step waits for the first tracked update
        if step is not None and self.tracker.has_evidence(self.cfg.metric):
            self.prune_to(step)

    def prune_to(self, scheduled_step: int) -> dict:
        """Prune to the cumulative ratio of ``scheduled_step``, update the tracker, log; returns the row."""
        t, agent, c = self.trainer, self.trainer.agent, self.cfg
        cumulative = self.schedule.ratio_at(scheduled_step)
        total, per = self._channels()
        ratio, per_ratios = 0.0, None
        if c.scope == "global":
            ratio = incremental_ratio(cumulative, self.original_total, total)
        else:
            per_ratios = {comp: incremental_ratio(cumulative, self.original_per_component[comp], n)
                          for comp, n in per.items()}
        scores = self.tracker.scores(c.metric, c.smoothing, c.normalize, c.normalize_by)
        keep = prune(self.tracker.groups, scores, ratio, scope=c.scope, per_component_ratios=per_ratios,
                     min_channels=c.min_channels, optimizers=[agent.optim, agent.pi_optim])
        self.tracker.after_pruning(keep)
        self.done = bisect.bisect_right(self.steps, scheduled_step)
        total, per = self._channels()
        row = {"step": t.step, "env_step": t.env_step, "update": t.updates, "scheduled_step": scheduled_step,
               "ratio": cumulative, "channels": total, "channels_original": self.original_total,
               "removed": self.original_total - total, "params": count_params(agent.model)["total"],
               **{f"channels_{comp}": n for comp, n in per.items()}}
        self.history.append(row)
        if t.logger is not None:
            t.logger.log(PRUNE_STREAM, row)
        print(f"[prune] env_step {t.env_step:>8d}  ratio {cumulative:.3f} of the original channels (scheduled at "
              f"{scheduled_step}): channels {total}/{self.original_total}, params {row['params']}", flush=True)
        return row

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to continue exactly (numbers, strings, lists, dicts only)."""
        return {
            "format": SCHEDULE_FORMAT,
            "config": {k: getattr(self.cfg, k) for k in _SCHEDULE_STATE_KEYS},
            "original": {"total": self.original_total, "per_component": dict(self.original_per_component)},
            "done": self.done,
            "history": [dict(r) for r in self.history],
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a :meth:`state_dict` (raises ``CheckpointError``, one line, if it belongs to another
        schedule or the model's widths do not match it). Rows of ``prune.csv`` that a killed run logged
        after the checkpoint are dropped by ``Logger.truncate`` when the resumed run prunes again."""
        from tdmpc.checkpoint import CheckpointError

        hint = "use a new run dir or set resume=false"
        if not isinstance(state, Mapping) or state.get("format") != SCHEDULE_FORMAT:
            raise CheckpointError(f"not a prune-schedule state (expected format {SCHEDULE_FORMAT!r}); {hint}")
        for key in _SCHEDULE_STATE_KEYS:
            if key in state["config"] and state["config"][key] != getattr(self.cfg, key):  # (a state written
                # before a key was recorded lacks it)
                raise CheckpointError(f"prune-schedule state has pruning.schedule.{key}={state['config'][key]!r}, "
                                      f"this run has {getattr(self.cfg, key)!r}; {hint}")
        history = [dict(r) for r in state["history"]]
        total, _ = self._channels()
        expected = history[-1]["channels"] if history else int(state["original"]["total"])
        if total != expected:
            raise CheckpointError(f"prune-schedule state expects {expected} channels, the model has {total}; {hint}")
        self.original_total = int(state["original"]["total"])
        self.original_per_component = {k: int(v) for k, v in state["original"]["per_component"].items()}
        self.done = int(state["done"])
        self.history = history


def resize_for_resume(trainer: Any) -> list[str]:
    """Give ``trainer.agent.model`` the (pruned) shapes of the checkpoint the trainer will resume from.

    Does nothing unless ``trainer.cfg.resume`` and ``trainer.checkpoint_path`` exists. Resized models get
    new optimisers (``agent.build_optimizers()``); ``Trainer.train()`` then loads weights and states.
    Returns the names of the resized modules.
    """
    state = trainer.resume_state()  # read once, shared with Trainer.train()
    if state is None:
        return []
    model_state = state.get("agent", {}).get("model") if isinstance(state.get("agent"), Mapping) else None
    if model_state is None:
        return []  # not a training checkpoint: Trainer.load_checkpoint reports it
    resized = resize_to_state_dict(trainer.agent.model, model_state)
    if resized:
        trainer.agent.build_optimizers()
    return resized


def attach_schedule(trainer: Any, tracker: ImportanceTracker | None,
                    cfg: ScheduleConfig | TrackingConfig) -> ScheduledPruner | None:
    """Prune ``trainer.agent.model`` during ``trainer.train()`` by ``cfg`` (``pruning.schedule``, or the
    whole ``pruning`` section); ``None`` if the schedule is disabled.

    The hook is appended to ``trainer.update_hooks`` after the tracker's (attach the tracker first);
    on a resumed run the model must already have the checkpoint's widths (:func:`tracker_callback`
    does it in this order).
    """
    if isinstance(cfg, TrackingConfig):
        cfg = check_schedule_against(dataclasses.replace(cfg)).schedule
    cfg = schedule_config(cfg)
    if not cfg.enabled:
        return None
    if tracker is None:
        raise ValueError("attach_schedule needs an ImportanceTracker (pruning.enabled=true)")
    if cfg.metric not in tracker.cfg.metrics:
        raise ValueError(f"metric {cfg.metric!r} is not tracked (pruning.metrics={tracker.cfg.metrics})")
    pruner = ScheduledPruner(trainer, tracker, cfg)
    steps = getattr(trainer.cfg, "steps", None)
    if pruner.steps and steps is not None and pruner.steps[-1] > steps:
        print(f"[prune] note: the schedule ends at env step {pruner.steps[-1]}, after steps={steps}: the target "
              f"is reached only if training is resumed with more steps", flush=True)
    seeding_end = getattr(trainer, "seeding_end", None)
    if pruner.steps and steps is not None and seeding_end is not None and seeding_end >= steps:
        print(f"[prune] note: seeding (whole episodes, {seeding_end} env steps) covers steps={steps}: no update "
              f"runs, so no scheduled prune either", flush=True)
    trainer.update_hooks.append(pruner)
    trainer.checkpoint_extras[SCHEDULE_KEY] = pruner
    return pruner


def tracker_callback(cfg: TrackingConfig) -> Callable[[Any, Any], None]:
    """An ``on_trainer(trainer, train_cfg)`` callback for ``tdmpc.cli.run_train``: resize the model to a
    resumed checkpoint's widths, attach a tracker, then the pruning schedule (in this order)."""

    def on_trainer(trainer: Any, train_cfg: Any) -> None:
        resize_for_resume(trainer)
        tracker = attach_tracker(trainer, cfg)
        attach_schedule(trainer, tracker, cfg)

    return on_trainer
