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

This is the only module of ``pruning`` that touches ``tdmpc`` (lazily, for its error type).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pruning.config import TrackingConfig
from pruning.tracker import ImportanceTracker

#: Name of the tracker's entry in the trainer checkpoint's ``extras``.
CHECKPOINT_KEY = "importance"


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
    tracker = ImportanceTracker(trainer.agent.model, cfg, run_dir=trainer.run_dir)

    def hook(t: Any, losses: dict) -> None:
        tracker.step(t.updates)

    trainer.update_hooks.append(hook)
    trainer.checkpoint_extras[CHECKPOINT_KEY] = CheckpointedTracker(tracker)
    return tracker


def tracker_callback(cfg: TrackingConfig) -> Callable[[Any, Any], None]:
    """An ``on_trainer(trainer, train_cfg)`` callback for ``tdmpc.cli.run_train`` that attaches a tracker."""

    def on_trainer(trainer: Any, train_cfg: Any) -> None:
        attach_tracker(trainer, cfg)

    return on_trainer
