"""Importance tracking during training: per-channel scores of every group, snapshots, exact resume.

:class:`ImportanceTracker` reads the gradients training already computed (call :meth:`~ImportanceTracker.step`
after ``backward``; after ``optimizer.step`` is fine, the gradients are still there) and keeps, for every
gradient metric of :mod:`pruning.importance`, both an EMA and a cumulative sum of its per-step signal
(plus Welford / EMA moments for ``bayes``). :meth:`~ImportanceTracker.scores` returns
``{group name: 1-D float64 tensor of the group's size}`` that :func:`pruning.prune.prune` accepts.

Snapshots: every ``snapshot_interval`` updates the scores of every tracked metric (default smoothing
and normalisation, i.e. exactly what ``scores(metric)`` returns) are stored as rows
``(step, component, layer, channel, metric, score)``; :meth:`~ImportanceTracker.flush` writes them to
``run_dir/importance.parquet``. The file is rewritten atomically (temp file + ``os.replace``) keeping
only the rows with ``step <= written_through`` (the last snapshot already flushed in the state this
tracker was restored from), so rows that a killed run wrote after its last checkpoint are dropped and
a resumed run produces the same file as an uninterrupted one. (Rewriting costs one read of the file
per flush; flushes happen at checkpoints, and a 100k-step run holds ~10^6 rows: well under a second.)

State (:meth:`~ImportanceTracker.state_dict`) holds only tensors, numbers, strings, lists and dicts,
so it loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from pruning.config import (
    GRADIENT_METRICS,
    METRICS,
    NORMALIZE_BY,
    SMOOTHINGS,
    TrackingConfig,
    validate_tracking,
)
from pruning.groups import Group, model_groups
from pruning.importance import (
    ChannelLayout,
    bias_correction,
    gradient_sums,
    normalize_scores,
    random_scores,
    required_stats,
    signals,
    weight_sums,
)

STATE_FORMAT = "ca-prune/importance-tracker/v1"
PARQUET_NAME = "importance.parquet"
#: Columns of importance.parquet, in order.
COLUMNS = ("step", "component", "layer", "channel", "metric", "score")
#: Config keys that must match for a state to be loaded (they define what the state means).
_STATE_KEYS = ("metrics", "beta", "grad_acc_variant", "fisher_variant")


def _schema():
    import pyarrow as pa

    return pa.schema([("step", pa.int64()), ("component", pa.string()), ("layer", pa.string()),
                      ("channel", pa.int64()), ("metric", pa.string()), ("score", pa.float64())])


class ImportanceTracker:
    """Tracks per-channel importance of ``groups`` of ``model`` from its gradients (see module doc).

    ``groups`` default to :func:`pruning.groups.model_groups` ``(model, cfg.prune_latent)``.
    ``run_dir``: where :meth:`flush` writes ``importance.parquet`` (``None``: snapshots stay in memory).
    """

    def __init__(self, model: nn.Module, cfg: TrackingConfig | None = None, groups: Sequence[Group] | None = None,
                 run_dir: str | Path | None = None):
        self.model = model
        self.cfg = validate_tracking(dataclasses.replace(cfg) if cfg is not None else TrackingConfig())
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._explicit_groups = groups is not None
        self._set_groups(list(groups) if groups is not None else model_groups(model, self.cfg.prune_latent))
        c = self.cfg
        self.grad_metrics = [m for m in GRADIENT_METRICS if m in c.metrics]
        self._stats = required_stats(self.grad_metrics, c.grad_acc_variant, c.fisher_variant)
        param = next(iter(model.parameters()), None)
        self.device = param.device if param is not None else torch.device("cpu")
        C, M = self.layout.num_channels, len(self.grad_metrics)
        z = dict(dtype=torch.float64, device=self.device)
        self.num_steps = 0  # tracked steps (gradient reads)
        self.ema = torch.zeros(M, C, **z)  # un-corrected EMA of each gradient metric's signal
        self.cum = torch.zeros(M, C, **z)  # cumulative sum of each gradient metric's signal
        self.bayes_ema_sq = torch.zeros(C, **z)  # EMA of x^2 (bayes signal)
        self.bayes_mean = torch.zeros(C, **z)  # Welford running mean
        self.bayes_m2 = torch.zeros(C, **z)  # Welford sum of squared deviations
        self.random = random_scores(C, c.seed).to(self.device)
        self.pending: list[dict] = []  # snapshots not yet written
        self.written_through = -1  # last snapshot step contained in importance.parquet

    def _set_groups(self, groups: list[Group]) -> None:
        self.groups = groups
        self.layout = ChannelLayout(groups)

    # ------------------------------------------------------------------------------ tracking
    def step(self, update: int) -> bool:
        """Read the current ``.grad`` if ``update % interval == 0`` (returns whether it did); snapshot
        the scores if ``update % snapshot_interval == 0``."""
        c = self.cfg
        tracked = update % c.interval == 0
        if tracked and self.grad_metrics:
            sums = gradient_sums(self.layout, self._stats)
            x = torch.stack([signals(sums, m, c.grad_acc_variant, c.fisher_variant) for m in self.grad_metrics])
            self.ema.lerp_(x, 1.0 - c.beta)  # ema <- beta * ema + (1 - beta) * x
            self.cum.add_(x)
            if "bayes" in self.grad_metrics:
                b = x[self.grad_metrics.index("bayes")]
                self.bayes_ema_sq.lerp_(b * b, 1.0 - c.beta)
                delta = b - self.bayes_mean  # Welford (1962)
                self.bayes_mean.add_(delta / (self.num_steps + 1))
                self.bayes_m2.add_(delta * (b - self.bayes_mean))
        if tracked:
            self.num_steps += 1
        if c.snapshot_interval and update % c.snapshot_interval == 0:
            self.snapshot(update)
        return tracked

    def _row(self, metric: str) -> int:
        if metric not in self.grad_metrics:
            raise ValueError(f"metric {metric!r} is not tracked (pruning.metrics={self.cfg.metrics})")
        return self.grad_metrics.index(metric)

    def _smoothing(self, smoothing: str | None) -> str:
        s = self.cfg.smoothing if smoothing is None else smoothing
        if s not in SMOOTHINGS:
            raise ValueError(f"smoothing must be one of {SMOOTHINGS}, got {s!r}")
        return s

    def _bayes_moments(self, smoothing: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and std of the bayes signal (zeros before the first step)."""
        row = self._row("bayes")
        if self.num_steps == 0:
            return torch.zeros_like(self.bayes_mean), torch.zeros_like(self.bayes_mean)
        if self._smoothing(smoothing) == "cumulative":
            return self.bayes_mean.clone(), (self.bayes_m2 / self.num_steps).clamp_min(0).sqrt()
        corr = bias_correction(self.cfg.beta, self.num_steps)
        mean = self.ema[row] / corr
        return mean, (self.bayes_ema_sq / corr - mean.square()).clamp_min(0).sqrt()

    def flat_scores(self, metric: str, smoothing: str | None = None) -> torch.Tensor:
        """Raw (unnormalised) scores of all channels, flat in group order (see ``layout``)."""
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if metric == "l1":
            return weight_sums(self.layout, ["abs"])["abs"]
        if metric == "l2":
            return weight_sums(self.layout, ["t2"])["t2"].sqrt()
        if metric == "random":
            return self.random.clone()
        if metric == "bayes":
            mean, std = self._bayes_moments(smoothing)
            return mean + self.cfg.bayes_kappa * std
        row = self._row(metric)
        if self._smoothing(smoothing) == "cumulative":
            return self.cum[row].clone()
        if self.num_steps == 0:
            return torch.zeros_like(self.ema[row])
        return self.ema[row] / bias_correction(self.cfg.beta, self.num_steps)

    def scores(self, metric: str, smoothing: str | None = None, normalize: str | None = None,
               normalize_by: str | None = None) -> dict[str, torch.Tensor]:
        """``{group name: float64 CPU tensor (group.size,)}``; higher = more important.

        ``smoothing`` (ema|cumulative), ``normalize`` (none|mean|max|sum) and ``normalize_by``
        (component|group) default to the config's.
        """
        flat = self.flat_scores(metric, smoothing)
        how = self.cfg.normalize if normalize is None else normalize
        by = self.cfg.normalize_by if normalize_by is None else normalize_by
        if by not in NORMALIZE_BY:
            raise ValueError(f"normalize_by must be one of {NORMALIZE_BY}, got {by!r}")
        index = self.layout.component_index if by == "component" else self.layout.group_index
        flat = normalize_scores(flat, index, how).cpu()
        return self.layout.split(flat)

    def snr(self, smoothing: str | None = None) -> dict[str, torch.Tensor]:
        """Signal-to-noise ratio ``mu / sigma`` of the bayes posterior per channel (``inf`` where sigma = 0
        and mu > 0, 0 where both are 0)."""
        mean, std = self._bayes_moments(smoothing)
        snr = torch.where(mean == 0, torch.zeros_like(mean), mean / std)
        return self.layout.split(snr.cpu())

    # ------------------------------------------------------------------------------ snapshots
    def snapshot(self, update: int) -> None:
        """Store the current scores of every tracked metric: ``scores(metric, normalize="none")``.

        Snapshots hold raw (un-normalised) scores so that shifts of importance *between* components stay
        visible (per-component normalisation makes every component's mean 1 at every step); normalise
        when reading (:func:`pruning.importance.normalize_scores`).
        """
        metrics = list(self.cfg.metrics)
        rows = torch.stack([self.flat_scores(m) for m in metrics]).cpu()
        self.pending = [p for p in self.pending if p["step"] != int(update)]
        self.pending.append({
            "step": int(update), "metrics": metrics, "layers": list(self.layout.names),
            "components": [g.component for g in self.groups], "sizes": list(self.layout.sizes), "scores": rows,
        })

    @staticmethod
    def _table(snapshots: Sequence[dict]):
        """Rows ``(step, component, layer, channel, metric, score)``: per snapshot, metric-major, then
        groups in order, then channels."""
        import pyarrow as pa

        cols: dict[str, list[np.ndarray]] = {k: [] for k in COLUMNS}
        for s in snapshots:
            sizes = np.asarray(s["sizes"], dtype=np.int64)
            C, M = int(sizes.sum()), len(s["metrics"])
            layer = np.repeat(np.asarray(s["layers"], dtype=object), sizes)
            comp = np.repeat(np.asarray(s["components"], dtype=object), sizes)
            channel = np.concatenate([np.arange(n, dtype=np.int64) for n in sizes]) if C else np.zeros(0, np.int64)
            cols["step"].append(np.full(M * C, s["step"], dtype=np.int64))
            cols["component"].append(np.tile(comp, M))
            cols["layer"].append(np.tile(layer, M))
            cols["channel"].append(np.tile(channel, M))
            cols["metric"].append(np.repeat(np.asarray(s["metrics"], dtype=object), C))
            cols["score"].append(s["scores"].numpy().reshape(-1))
        schema = _schema()
        arrays = [pa.array(np.concatenate(cols[k]) if cols[k] else [], type=schema.field(k).type) for k in COLUMNS]
        return pa.Table.from_arrays(arrays, schema=schema)

    @property
    def parquet_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / PARQUET_NAME

    def flush(self) -> Path | None:
        """Write pending snapshots to ``run_dir/importance.parquet`` (see module doc); returns its path.

        Without a ``run_dir`` snapshots stay pending and ``None`` is returned.
        """
        path = self.parquet_path
        if path is None:
            return None
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        old = pq.read_table(path) if path.exists() else None
        kept = old
        if old is not None and old.num_rows:
            kept = old.filter(pc.less_equal(old["step"], self.written_through))
        if old is not None and not self.pending and kept.num_rows == old.num_rows:
            return path  # nothing to add, nothing to drop
        parts = [t for t in (kept, self._table(self.pending)) if t is not None]
        table = pa.concat_tables([t.cast(_schema()) for t in parts]).combine_chunks()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if self.pending:
            self.written_through = max(self.written_through, max(p["step"] for p in self.pending))
        self.pending = []
        return path

    def snapshot_table(self):
        """All snapshot rows (file + pending) as a ``pyarrow.Table`` (file rows after ``written_through``
        excluded)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        parts = []
        path = self.parquet_path
        if path is not None and path.exists():
            t = pq.read_table(path)
            parts.append(t.filter(pc.less_equal(t["step"], self.written_through)).cast(_schema()))
        parts.append(self._table(self.pending))
        return pa.concat_tables(parts)

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to continue exactly (tensors, numbers, strings, lists, dicts only)."""
        c = self.cfg
        return {
            "format": STATE_FORMAT,
            "config": {"metrics": list(c.metrics), "beta": c.beta, "grad_acc_variant": c.grad_acc_variant,
                       "fisher_variant": c.fisher_variant, "seed": c.seed},
            "groups": {"names": list(self.layout.names), "sizes": list(self.layout.sizes)},
            "grad_metrics": list(self.grad_metrics),
            "num_steps": self.num_steps,
            "ema": self.ema.detach().cpu().clone(),
            "cum": self.cum.detach().cpu().clone(),
            "bayes": {"ema_sq": self.bayes_ema_sq.cpu().clone(), "mean": self.bayes_mean.cpu().clone(),
                      "m2": self.bayes_m2.cpu().clone()},
            "random": self.random.cpu().clone(),
            "pending": [{**p, "scores": p["scores"].clone()} for p in self.pending],
            "written_through": self.written_through,
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a :meth:`state_dict`; raises ``ValueError`` (one line) if it belongs to other groups or
        another metric configuration."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not an importance-tracker state (expected format {STATE_FORMAT!r})")
        mine = self.state_dict()
        for key in _STATE_KEYS:
            if state["config"][key] != mine["config"][key]:
                raise ValueError(f"importance-tracker state has pruning.{key}={state['config'][key]!r}, "
                                 f"this run has {mine['config'][key]!r}")
        if state["groups"] != mine["groups"]:
            raise ValueError("importance-tracker state was recorded for other groups (names or sizes differ)")
        to = dict(dtype=torch.float64, device=self.device)
        self.num_steps = int(state["num_steps"])
        self.ema = state["ema"].to(**to).clone()
        self.cum = state["cum"].to(**to).clone()
        self.bayes_ema_sq = state["bayes"]["ema_sq"].to(**to).clone()
        self.bayes_mean = state["bayes"]["mean"].to(**to).clone()
        self.bayes_m2 = state["bayes"]["m2"].to(**to).clone()
        self.random = state["random"].to(**to).clone()
        self.pending = [{**p, "scores": p["scores"].clone()} for p in state["pending"]]
        self.written_through = int(state["written_through"])

    # ------------------------------------------------------------------------------ pruning
    def after_pruning(self, keep: Mapping[str, torch.Tensor | Sequence[int]],
                      groups: Sequence[Group] | None = None) -> None:
        """Follow a structural pruning: keep the state of the kept channels only and rebuild the groups.

        ``keep`` is what :func:`pruning.prune.prune` returns (group name -> kept indices; groups not
        named kept all their channels). ``groups``: the groups of the pruned model (default: rebuilt
        with :func:`~pruning.groups.model_groups`). Snapshots already taken keep their own layout.
        """
        if groups is None:
            groups = model_groups(self.model, self.cfg.prune_latent)
        new = list(groups)
        old = {n: (off, size) for n, off, size in zip(self.layout.names, self.layout.offsets, self.layout.sizes)}
        unknown = [n for n in keep if n not in old]
        if unknown:
            raise ValueError(f"after_pruning: unknown group(s) {unknown}")
        index = []
        for g in new:
            if g.name not in old:
                raise ValueError(f"after_pruning: group {g.name!r} of the pruned model was not tracked")
            off, size = old[g.name]
            idx = torch.arange(size) if g.name not in keep else torch.sort(torch.as_tensor(keep[g.name]).long()).values
            if idx.numel() != g.size:
                raise ValueError(f"after_pruning: group {g.name!r} keeps {idx.numel()} channels but now has {g.size}")
            index.append(idx + off)
        flat = (torch.cat(index) if index else torch.zeros(0, dtype=torch.long)).to(self.device)
        self.ema = self.ema.index_select(1, flat)
        self.cum = self.cum.index_select(1, flat)
        self.bayes_ema_sq, self.bayes_mean, self.bayes_m2, self.random = (
            t.index_select(0, flat) for t in (self.bayes_ema_sq, self.bayes_mean, self.bayes_m2, self.random)
        )
        self._set_groups(new)
