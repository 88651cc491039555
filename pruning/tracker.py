"""Importance tracking during training: per-channel scores of every group, snapshots, exact resume.

:class:`ImportanceTracker` holds one :class:`~pruning.metrics.ImportanceMetric` per name in
``cfg.metrics`` (looked up in the registry, :mod:`pruning.metrics`). It reads the gradients training
already computed (call :meth:`~ImportanceTracker.step` after ``backward``; after ``optimizer.step`` is
fine, the gradients are still there) and, if a metric needs them, the per-sample gate derivatives that
its hooks captured during those backward passes (:mod:`pruning.gates`), and hands both to every metric
as one :class:`~pruning.metrics.Evidence`. :meth:`~ImportanceTracker.scores` returns
``{group name: 1-D float64 tensor of the group's size}`` that :func:`pruning.prune.prune` accepts.

Snapshots: every ``snapshot_interval`` updates the raw scores of every tracked metric (default
smoothing, no normalisation: ``scores(metric, normalize="none")``) are stored as rows
``(step, component, layer, channel, metric, score)``; :meth:`~ImportanceTracker.flush` writes them to
``run_dir/importance.parquet``. The file is rewritten atomically (temp file + ``os.replace``) keeping
only the rows with ``step <= written_through`` (the last snapshot already flushed in the state this
tracker was restored from), so rows that a killed run wrote after its last checkpoint are dropped and
a resumed run produces the same file as an uninterrupted one. (Rewriting costs one read of the file
per flush; flushes happen at checkpoints, and a 100k-step run holds ~10^6 rows: well under a second.)
A damaged file never stops a run: it is moved aside to ``importance.parquet.corrupt-<UTC time>`` with a
one-line warning and written anew from the snapshots held since the checkpoint
(:mod:`pruning.snapshot_file`).

State (:meth:`~ImportanceTracker.state_dict`) holds only tensors, numbers, strings, lists and dicts,
so it loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from pruning.config import NORMALIZE_BY, SMOOTHINGS, TrackingConfig, validate_tracking
from pruning.gates import GateCapture
from pruning.groups import Group, model_groups
from pruning.importance import ChannelLayout, normalize_scores
from pruning.metrics import Evidence, ImportanceMetric, metric_class
from pruning.snapshot_file import read_or_quarantine, write_atomic
from pruning.snapshot_file import schema as snapshot_schema

STATE_FORMAT = "ca-prune/importance-tracker/v2"
PARQUET_NAME = "importance.parquet"
#: Columns of importance.parquet, in order.
COLUMNS = ("step", "component", "layer", "channel", "metric", "score")
#: Config keys that must match for a state to be loaded (they define what the state means).
_STATE_KEYS = ("metrics", "beta", "grad_acc_variant", "grad_sq_variant")


class ImportanceTracker:
    """Tracks per-channel importance of ``groups`` of ``model`` (see module doc).

    ``groups`` default to :func:`pruning.groups.model_groups` ``(model, cfg.prune_latent)``; explicit
    groups are kept, and :meth:`after_pruning` then needs the pruned model's groups. ``run_dir``: where
    :meth:`flush` writes ``importance.parquet`` (``None``: snapshots stay in memory). ``samples``: the
    batch size of an update, for metrics that read per-sample gate derivatives (see
    :class:`pruning.gates.GateCapture`; ``None``: every row of a consumer's input is a sample).
    """

    def __init__(self, model: nn.Module, cfg: TrackingConfig | None = None, groups: Sequence[Group] | None = None,
                 run_dir: str | Path | None = None, samples: int | None = None):
        self.model = model
        self.cfg = validate_tracking(dataclasses.replace(cfg) if cfg is not None else TrackingConfig())
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.samples = samples
        param = next(iter(model.parameters()), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self.gates: GateCapture | None = None
        self._explicit = groups is not None  # after_pruning rebuilds only the tracked groups
        self._set_groups(list(groups) if groups is not None else model_groups(model, self.cfg.prune_latent),
                         capture=True)
        self.metrics: dict[str, ImportanceMetric] = {
            m: metric_class(m)(self.layout, self.cfg, self.device) for m in self.cfg.metrics}
        self.num_steps = 0  # tracked steps (gradient reads)
        self.pending: list[dict] = []  # snapshots not yet written
        self.written_through = -1  # last snapshot step contained in importance.parquet

    def _set_groups(self, groups: list[Group], capture: bool) -> None:
        """Adopt ``groups``; the gate hooks are registered for them if ``capture`` (else left removed)."""
        self.groups = groups
        self.layout = ChannelLayout(groups)
        if self.gates is not None:
            self.gates.remove()
            self.gates = None
        self._idle_gates: GateCapture | None = None  # hooks built for the old groups are dropped
        self.set_capture(capture)

    def close(self) -> None:
        """Unregister the gate hooks (the tracker keeps its scores)."""
        self.set_capture(False)

    def set_capture(self, enabled: bool) -> None:
        """Register (``True``) or remove (``False``) the gate hooks; while removed, gate metrics get no
        evidence. Tracking starts with them registered when a tracked metric needs them."""
        if self.gates is not None:
            self.gates.remove()
            self._idle_gates, self.gates = self.gates, None  # kept for the next gate update (same groups)
        classes = [metric_class(m) for m in self.cfg.metrics]
        self._gated = any(c.needs_gates or c.needs_activations for c in classes)
        if enabled and self._gated:
            if self._idle_gates is not None:
                self.gates, self._idle_gates = self._idle_gates, None
                self.gates.attach()
            else:
                self.gates = GateCapture(self.groups, self.layout.offsets, self.layout.num_channels, self.samples,
                                         activations=any(c.needs_activations for c in classes), model=self.model)

    # ------------------------------------------------------------------------------ tracking
    def step(self, update: int) -> bool:
        """Feed the current ``.grad`` (and the captured gate derivatives) to every metric if
        ``update % interval == 0`` (returns whether it did); snapshot the scores if
        ``update % snapshot_interval == 0``. Gate derivatives of untracked updates are dropped."""
        c = self.cfg
        tracked = update % c.interval == 0
        capture = self.gates.take() if self.gates is not None else None
        if capture is not None and update % c.gate_interval:
            capture = None  # hooks were on for an update that is not a gate update (the first one)
        if tracked:
            observers = [m for m in self.metrics.values() if m.tracked]
            stats = set().union(*(m.grad_stats() for m in observers)) if observers else set()
            evidence = Evidence(self.layout, capture, stats)
            for m in observers:
                m.observe(evidence)
            self.num_steps += 1
        if c.snapshot_interval and update % c.snapshot_interval == 0:
            self.snapshot(update)
        if self._gated and (c.gate_interval > 1 or c.interval > 1):  # hooks on only for the next gate update
            nxt = update + 1
            want = nxt % c.interval == 0 and nxt % c.gate_interval == 0
            if want != (self.gates is not None):
                self.set_capture(want)
        return tracked

    def _metric(self, metric: str) -> ImportanceMetric:
        if metric not in self.metrics:
            metric_class(metric)  # unknown names: the registry's one-line error
            raise ValueError(f"metric {metric!r} is not tracked (pruning.metrics={self.cfg.metrics})")
        return self.metrics[metric]

    def _smoothing(self, smoothing: str | None) -> str:
        s = self.cfg.smoothing if smoothing is None else smoothing
        if s not in SMOOTHINGS:
            raise ValueError(f"smoothing must be one of {SMOOTHINGS}, got {s!r}")
        return s

    def has_evidence(self, metric: str) -> bool:
        """Whether ``metric``'s scores rest on evidence (:meth:`pruning.metrics.ImportanceMetric.has_evidence`):
        a tracked metric before its first observed update scores every channel 0, and pruning by such scores
        would remove channels in index order."""
        return self._metric(metric).has_evidence()

    def flat_scores(self, metric: str, smoothing: str | None = None) -> torch.Tensor:
        """Raw (unnormalised) scores of all channels, flat in group order (see ``layout``)."""
        return self._metric(metric).scores(self._smoothing(smoothing))

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
        """Signal-to-noise ratio ``mu / sigma`` of the ``bayes`` posterior per channel (``inf`` where
        sigma = 0 and mu > 0, 0 where both are 0)."""
        return self.layout.split(self._metric("bayes").snr(self._smoothing(smoothing)).cpu())

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
        schema = snapshot_schema()
        arrays = [pa.array(np.concatenate(cols[k]) if cols[k] else [], type=schema.field(k).type) for k in COLUMNS]
        return pa.Table.from_arrays(arrays, schema=schema)

    @property
    def parquet_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / PARQUET_NAME

    def flush(self) -> Path | None:
        """Write pending snapshots to ``run_dir/importance.parquet`` (see module doc); returns its path.

        Without a ``run_dir`` snapshots stay pending and ``None`` is returned. A damaged file is moved
        aside with a one-line warning (:func:`pruning.snapshot_file.read_or_quarantine`) and the file is
        written anew from the pending snapshots.
        """
        path = self.parquet_path
        if path is None:
            return None
        import pyarrow as pa
        import pyarrow.compute as pc

        old = read_or_quarantine(path)
        kept = old
        if old is not None and old.num_rows:
            kept = old.filter(pc.less_equal(old["step"], self.written_through))
        if old is not None and not self.pending and kept.num_rows == old.num_rows:
            return path  # nothing to add, nothing to drop
        parts = [t for t in (kept, self._table(self.pending)) if t is not None]
        write_atomic(pa.concat_tables(parts).combine_chunks(), path)
        if self.pending:
            self.written_through = max(self.written_through, max(p["step"] for p in self.pending))
        self.pending = []
        return path

    def snapshot_table(self):
        """All snapshot rows (file + pending) as a ``pyarrow.Table`` (file rows after ``written_through``
        excluded; a damaged file is moved aside and contributes nothing)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        parts = []
        path = self.parquet_path
        t = read_or_quarantine(path, "its rows are left out") if path is not None else None
        if t is not None:
            parts.append(t.filter(pc.less_equal(t["step"], self.written_through)))
        parts.append(self._table(self.pending))
        return pa.concat_tables(parts)

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to continue exactly (tensors, numbers, strings, lists, dicts only)."""
        c = self.cfg
        return {
            "format": STATE_FORMAT,
            "config": {"metrics": list(c.metrics), "beta": c.beta, "grad_acc_variant": c.grad_acc_variant,
                       "grad_sq_variant": c.grad_sq_variant, "seed": c.seed},
            "groups": {"names": list(self.layout.names), "sizes": list(self.layout.sizes)},
            "num_steps": self.num_steps,
            "metrics": {name: m.state_dict() for name, m in self.metrics.items()},
            "pending": [{**p, "scores": p["scores"].clone()} for p in self.pending],
            "written_through": self.written_through,
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a :meth:`state_dict`; raises ``ValueError`` (one line) if it belongs to other groups or
        another metric configuration."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"not an importance-tracker state of this version (expected format "
                             f"{STATE_FORMAT!r}, found {found!r})")
        mine = self.state_dict()
        for key in _STATE_KEYS:
            if state["config"][key] != mine["config"][key]:
                raise ValueError(f"importance-tracker state has pruning.{key}={state['config'][key]!r}, "
                                 f"this run has {mine['config'][key]!r}")
        if state["groups"] != mine["groups"]:
            raise ValueError("importance-tracker state was recorded for other groups (names or sizes differ)")
        self.num_steps = int(state["num_steps"])
        for name, m in self.metrics.items():
            m.load_state_dict(state["metrics"][name])
        self.pending = [{**p, "scores": p["scores"].clone()} for p in state["pending"]]
        self.written_through = int(state["written_through"])

    # ------------------------------------------------------------------------------ pruning
    def after_pruning(self, keep: Mapping[str, torch.Tensor | Sequence[int]],
                      groups: Sequence[Group] | None = None) -> None:
        """Follow a structural pruning: keep the state of the kept channels only and rebuild the groups.

        ``keep`` is what :func:`pruning.prune.prune` returns (group name -> kept indices; groups not
        named kept all their channels). ``groups``: the groups of the pruned model (default: rebuilt
        with :func:`~pruning.groups.model_groups`, restricted to the tracked group names if the tracker
        was built with explicit groups). Every tracked group must be among them (``ValueError`` otherwise).
        Snapshots already taken keep their own layout.
        """
        old = {n: (off, size) for n, off, size in zip(self.layout.names, self.layout.offsets, self.layout.sizes)}
        if groups is not None:
            new = list(groups)
        else:
            new = model_groups(self.model, self.cfg.prune_latent)
            if self._explicit:
                new = [g for g in new if g.name in old]
        unknown = [n for n in keep if n not in old]
        if unknown:
            raise ValueError(f"after_pruning: unknown group(s) {unknown}")
        lost = [n for n in old if n not in {g.name for g in new}]
        if lost:  # its scores would vanish without a word (e.g. explicit groups the model does not declare)
            raise ValueError(f"after_pruning: tracked group(s) {lost} are not among the pruned model's groups; "
                             f"pass groups=<the pruned model's groups>")
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
        self._set_groups(new, capture=self.gates is not None)  # hooks stay off until the next gate update
        for m in self.metrics.values():
            m.select(flat, self.layout)
