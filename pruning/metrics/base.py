r"""The interface every importance metric implements, and the evidence a tracked update offers it.

A metric is one subclass of :class:`ImportanceMetric`, registered by name with
:func:`pruning.metrics.register`. The tracker (:class:`pruning.tracker.ImportanceTracker`) builds one
instance per tracked metric and

- calls :meth:`ImportanceMetric.observe` with an :class:`Evidence` after every tracked update (metrics
  with ``tracked = False``, e.g. weight norms, are computed on demand and ignore it);
- asks :meth:`ImportanceMetric.scores` for one raw (un-normalised) score per channel, flat in the
  layout's group order (higher = more important);
- saves / restores :meth:`~ImportanceMetric.state_dict` (tensors, numbers, strings, lists and dicts only,
  so it loads with ``torch.load(weights_only=True)``) and calls :meth:`~ImportanceMetric.select` when
  the model was pruned (keep the state of the kept channels).

What a metric may read (:class:`Evidence`): per-channel sums of per-element gradient statistics of the
channel's parameter slices (``g2`` = g², ``tg`` = θ·g, ``t2g2`` = θ²g², from ``.grad`` after the update,
i.e. after clipping), and per-sample derivatives of the loss with respect to a gate on every channel
(:mod:`pruning.gates`: activations × output-gradients, captured by hooks during the backward passes that
training runs anyway). Each quantity is computed once per update, whichever metrics ask for it. No
metric runs an extra forward or backward pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from pruning.importance import ChannelLayout, bias_correction, gradient_sums

if TYPE_CHECKING:
    from pruning.config import TrackingConfig
    from pruning.gates import Capture


class Evidence:
    """What one tracked update offers the metrics; every quantity is computed on first request only
    (and is valid while the tracker's ``step`` runs: the gate buffers are reused by the next update)."""

    def __init__(self, layout: ChannelLayout, capture: Capture | None, grad_stats: set[str]):
        self.layout = layout
        self._capture = capture if capture is not None and not capture.empty else None
        self._wanted = sorted(grad_stats)
        self._sums: dict[str, torch.Tensor] | None = None

    def grad_sum(self, stat: str) -> torch.Tensor:
        """``(C,)`` float64: :math:`\\sum_{S_c}` of ``stat`` (``g2``, ``tg`` or ``t2g2``) over channel slices."""
        if self._sums is None:
            self._sums = gradient_sums(self.layout, self._wanted)
        if stat not in self._sums:
            raise KeyError(f"gradient statistic {stat!r} was not requested by any metric's grad_stats()")
        return self._sums[stat]

    @property
    def gate_samples(self) -> torch.Tensor | None:
        """``(S, C)`` float64 per-sample gate derivatives :math:`d_{i,c} = \\partial\\ell_i/\\partial m_c`
        of this update (:mod:`pruning.gates`), or ``None`` if no backward pass reached a consumer since the
        last tracked step. Metrics that need only the mean or mean square over samples read
        :attr:`gate_mean` / :attr:`gate_sq_mean` (no ``(S, C)`` matrix is formed for them)."""
        return None if self._capture is None else self._capture.gates

    @property
    def gate_mean(self) -> torch.Tensor | None:
        """``(C,)`` float64 :math:`\\frac1S\\sum_i d_{i,c}` (the mini-batch gate derivative), or ``None``."""
        return None if self._capture is None else self._capture.mean

    @property
    def gate_sq_mean(self) -> torch.Tensor | None:
        """``(C,)`` float64 :math:`\\frac1S\\sum_i d_{i,c}^2`, or ``None``."""
        return None if self._capture is None else self._capture.sq_mean

    @property
    def activation_sq(self) -> torch.Tensor | None:
        """``(C,)`` float64 mean squared activation of every channel over all positions where it was read
        in this update (only for metrics with ``needs_activations``), or ``None``."""
        return None if self._capture is None else self._capture.activation_sq


class ImportanceMetric:
    """Base class of the importance metrics (see the module doc).

    Class attributes: ``name`` (registry key), ``tracked`` (accumulates evidence during training, so it
    needs the training run's state to be used later), ``needs_gates`` (reads
    :attr:`Evidence.gate_samples`), ``needs_activations`` (reads :attr:`Evidence.activation_sq`). ``layout`` is the tracker's :class:`ChannelLayout`, ``cfg`` its
    :class:`~pruning.config.TrackingConfig`.
    """

    name: ClassVar[str] = ""
    tracked: ClassVar[bool] = False
    needs_gates: ClassVar[bool] = False
    needs_activations: ClassVar[bool] = False

    def __init__(self, layout: ChannelLayout, cfg: TrackingConfig, device: torch.device):
        self.layout, self.cfg, self.device = layout, cfg, device

    def grad_stats(self) -> set[str]:
        """Gradient statistics (:meth:`Evidence.grad_sum`) :meth:`observe` reads."""
        return set()

    def has_evidence(self) -> bool:
        """Whether :meth:`scores` rests on evidence: always for a metric computed on demand; for a tracked one
        once it has observed an update (before, its scores are all zero and would prune by channel index)."""
        return True

    def observe(self, evidence: Evidence) -> None:
        """Take in one tracked update."""

    def scores(self, smoothing: str) -> torch.Tensor:
        """Raw scores ``(C,)`` float64 on ``device``, flat in layout order; higher = more important."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def select(self, index: torch.Tensor, layout: ChannelLayout) -> None:
        """The model was pruned: keep flat channels ``index`` (old positions) and adopt ``layout``."""
        self.layout = layout


class SmoothedMetric(ImportanceMetric):
    r"""A tracked metric defined by a per-step signal :math:`x_{c,t}` (:meth:`signal`), kept both as the
    cumulative sum :math:`\sum_t x_{c,t}` and as the bias-corrected EMA (see ``docs/method.md``).
    :meth:`signal` returns ``None`` when an update carries no evidence for the metric (then nothing
    changes and the step is not counted)."""

    tracked: ClassVar[bool] = True

    def __init__(self, layout: ChannelLayout, cfg: TrackingConfig, device: torch.device):
        super().__init__(layout, cfg, device)
        z = dict(dtype=torch.float64, device=device)
        self.n = 0
        self.ema = torch.zeros(layout.num_channels, **z)  # un-corrected EMA
        self.cum = torch.zeros(layout.num_channels, **z)

    def signal(self, evidence: Evidence) -> torch.Tensor | None:
        raise NotImplementedError

    def has_evidence(self) -> bool:
        return self.n > 0

    def observe(self, evidence: Evidence) -> None:
        x = self.signal(evidence)
        if x is None:
            return
        self.ema.lerp_(x, 1.0 - self.cfg.beta)  # ema <- beta * ema + (1 - beta) * x
        self.cum.add_(x)
        self.n += 1

    def scores(self, smoothing: str) -> torch.Tensor:
        if smoothing == "cumulative":
            return self.cum.clone()
        if self.n == 0:
            return torch.zeros_like(self.ema)
        return self.ema / bias_correction(self.cfg.beta, self.n)

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "ema": self.ema.detach().cpu().clone(), "cum": self.cum.detach().cpu().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        to = dict(dtype=torch.float64, device=self.device)
        self.n = int(state["n"])
        self.ema, self.cum = state["ema"].to(**to).clone(), state["cum"].to(**to).clone()

    def select(self, index: torch.Tensor, layout: ChannelLayout) -> None:
        super().select(index, layout)
        self.ema, self.cum = self.ema.index_select(0, index), self.cum.index_select(0, index)
