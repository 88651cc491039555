"""When to prune and how much: one-shot and iterative (gradual) pruning schedules.

The **cumulative ratio** ``r(s)`` is the fraction of the *original* channels removed by step ``s``.
With progress ``t = (s - start) / (end - start)`` clipped to ``[0, 1]``:

- ``linear``: ``r(s) = target · t``
- ``cosine``: ``r(s) = target · (1 - cos(π t)) / 2`` (slow start and end, fastest in the middle)

``r = 0`` before ``start_step`` and ``r = target`` from ``end_step`` on. One-shot pruning is
``start_step == end_step``: a single prune to ``target`` at that step.

Pruning happens at ``start_step + k · every`` (``k >= 1``, up to ``end_step``) and always at
``end_step``, so the last prune reaches the target; ``finetune_steps`` of training follow.

**Iterative pruning acts on an already-pruned model.** ``pruning.prune(..., ratio)`` removes
``floor(ratio · C_cur)`` of the *current* ``C_cur`` channels. To reach ``floor(r · C_0)`` removed
channels of the original ``C_0``, the ratio applied to the current model is (:func:`incremental_ratio`)

    k = floor(r · C_0) - (C_0 - C_cur)        channels still to remove (>= 0)
    ratio_cur = k / C_cur                      so that floor(ratio_cur · C_cur) = k

Because the target is recomputed from ``C_0`` at every prune, a step that removes fewer channels than
asked (whole SimNorm units, ``min_channels``, equal ensemble widths) is caught up by the next one, and
after the last prune exactly ``floor(target · C_0)`` channels are gone whenever the unit constraints
allow it. For ``scope="per_component"`` / ``"per_group"`` apply the same formula with the counts of
each component / group.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

SCHEDULE_KINDS = ("cosine", "linear")


def _check_ratio(key: str, value: object) -> float:
    from pruning.prune import is_ratio  # lazily: this module is imported by pruning.config

    if not is_ratio(value):
        raise ValueError(f"invalid pruning schedule: {key}={value!r}; allowed: a number in [0, 1)")
    return float(value)


def _check_int(key: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"invalid pruning schedule: {key}={value!r}; allowed: an integer >= {minimum}")
    return int(value)


def ratio_at(step: int, target: float, start_step: int, end_step: int, kind: str = "cosine") -> float:
    """Cumulative pruning ratio at ``step`` (see the module docstring for the formulas)."""
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"invalid pruning schedule: kind={kind!r}; allowed: {'|'.join(SCHEDULE_KINDS)}")
    if end_step < start_step:
        raise ValueError(f"invalid pruning schedule: end_step={end_step!r}; allowed: >= start_step={start_step}")
    if step < start_step:
        return 0.0
    if step >= end_step:
        return float(target)
    t = (step - start_step) / (end_step - start_step)
    if kind == "linear":
        return float(target) * t
    return float(target) * (1.0 - math.cos(math.pi * t)) / 2.0


def incremental_ratio(cumulative: float, original: int, current: int) -> float:
    """Ratio to apply to a model with ``current`` of its ``original`` channels left, so that
    ``floor(cumulative · original)`` channels are removed in total (never negative)."""
    cumulative = _check_ratio("cumulative", cumulative)
    if not 0 < current <= original:
        raise ValueError(f"current channels {current} must be in (0, original={original}]")
    k = math.floor(cumulative * original + 1e-9) - (original - current)
    return max(k, 0) / current


@dataclass(frozen=True)
class PruningSchedule:
    """A pruning schedule; validated on construction (one-line ``ValueError`` naming key and value).

    ``every``: steps between prunes of an iterative schedule (ignored when one-shot).
    ``finetune_steps``: training steps after ``end_step`` without pruning.
    """

    kind: str = "cosine"
    target: float = 0.5
    start_step: int = 0
    end_step: int = 0
    every: int = 1
    finetune_steps: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(
                f"invalid pruning schedule: kind={self.kind!r}; allowed: {'|'.join(SCHEDULE_KINDS)}"
            )
        _check_ratio("target", self.target)
        _check_int("start_step", self.start_step, 0)
        _check_int("end_step", self.end_step, 0)
        if self.end_step < self.start_step:
            raise ValueError(
                f"invalid pruning schedule: end_step={self.end_step!r}; allowed: >= start_step={self.start_step}"
            )
        _check_int("every", self.every, 1)
        _check_int("finetune_steps", self.finetune_steps, 0)

    @property
    def one_shot(self) -> bool:
        return self.start_step == self.end_step

    @property
    def last_step(self) -> int:
        """The step after which the run is over: ``end_step + finetune_steps``."""
        return self.end_step + self.finetune_steps

    def ratio_at(self, step: int) -> float:
        """Cumulative ratio (fraction of the original channels removed) at ``step``."""
        return ratio_at(step, self.target, self.start_step, self.end_step, self.kind)

    def prune_steps(self) -> list[int]:
        """Every step at which :meth:`prune_at` returns a ratio, in order."""
        if self.one_shot:
            return [self.end_step] if self.target > 0 else []
        steps = list(range(self.start_step + self.every, self.end_step, self.every)) + [self.end_step]
        return [s for s in steps if self.ratio_at(s) > 0]

    def prune_at(self, step: int) -> float | None:
        """The cumulative ratio to prune to at ``step``, or ``None`` if no prune is due then."""
        if step < self.start_step or step > self.end_step or self.target == 0:
            return None
        if step == self.end_step:
            return float(self.target)
        if (step - self.start_step) % self.every or step == self.start_step:
            return None
        r = self.ratio_at(step)
        return r if r > 0 else None
