"""Component-aware pruning of an MLP autoencoder: a second multi-component model, as in the paper.

    python benchmarks/autoencoder.py                                   # 3 seeds, all metrics, ~1 min on 2 cores
    python benchmarks/autoencoder.py seeds=1 metrics=grad_acc,l1,random ratios=0.5 finetune_epochs=0

The model declares two components, ``encoder`` and ``decoder`` (``nn.Sequential`` MLPs of
``Linear -> LayerNorm -> Mish`` blocks), and one coupling, ``bottleneck``: the code width, produced by
the encoder's last ``Linear`` + ``LayerNorm`` and read by the decoder's first ``Linear`` (columns from
offset 0). :func:`pruning.groups.model_groups` therefore finds the hidden groups of each component and
the coupled ``bottleneck`` group; nothing in ``pruning/`` knows about autoencoders.

Experiment (per seed): train on scikit-learn's bundled 8x8 digits (1797 images, pixels scaled to
[0, 1], one fixed train/test split from ``data_seed``) with Adam on the reconstruction MSE, with an
:class:`~pruning.tracker.ImportanceTracker` tracking every metric in the same run (``tracker.step``
after every update). Then, for every metric and ratio, a deep copy of the trained model is pruned
structurally (``pruning.prune.prune(copy, scores, ratio, scope="global")``; the tracker's scores are
keyed by group name, which a deep copy shares), fine-tuned ``finetune_epochs`` epochs with a fresh Adam
(same batches for every metric) and measured:

- test reconstruction MSE :math:`\\frac{1}{N \\cdot 64} \\sum_n \\lVert \\hat x_n - x_n \\rVert^2`, right
  after pruning (``mse_before_ft``) and after fine-tuning (``mse``);
- parameters (:func:`pruning.measure.count_params`, ``total``) and matrix-multiply FLOPs per sample
  (:func:`pruning.measure.component_flops` at batch 1: :math:`\\sum_{linears} 2 \\cdot in \\cdot out`);
- the remaining width of every group.

The dense model (ratio 0) is fine-tuned the same number of epochs, so every model has had the same
training. Writes ``out`` (default ``benchmarks/results/autoencoder.json``: config, command, mean and
std over seeds per metric x ratio, per-seed values) and a plot of MSE vs FLOPs, one line per metric
(``.png`` and ``.svg`` next to it).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.autoencoder_config import (  # noqa: E402  (the command line; re-exported)
    ACTIVATIONS,
    AutoencoderConfig,
    ConfigError,
    parse_args,
)
from pruning.config import TrackingConfig  # noqa: E402
from pruning.groups import Coupling, model_groups  # noqa: E402
from pruning.measure import component_flops, count_params  # noqa: E402
from pruning.prune import prune  # noqa: E402
from pruning.tracker import ImportanceTracker  # noqa: E402

# ---------------------------------------------------------------------------------------- model


class Autoencoder(nn.Module):
    """MLP autoencoder ``in -> hidden... -> latent -> reversed(hidden)... -> in`` with a sigmoid output.

    Hidden blocks are ``Linear -> LayerNorm -> act``; the code is ``LayerNorm(Linear(h))`` (no
    activation). Declares ``components`` (encoder, decoder) and ``couplings()`` (the bottleneck), the
    contract :mod:`pruning` builds on.
    """

    def __init__(self, in_dim: int = 64, hidden: tuple[int, ...] = (128, 64), latent: int = 16, act: str = "mish"):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {tuple(ACTIVATIONS)}, got {act!r}")
        self.encoder = self._mlp([in_dim, *hidden, latent], act)
        self.encoder.append(nn.LayerNorm(latent))
        self.decoder = self._mlp([latent, *reversed(hidden), in_dim], act)
        self.decoder.append(nn.Sigmoid())

    @staticmethod
    def _mlp(dims: list[int], act: str) -> nn.Sequential:
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers += [nn.LayerNorm(b), ACTIVATIONS[act]()]
        return nn.Sequential(*layers)

    @property
    def components(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder}

    def couplings(self) -> list[Coupling]:
        """The bottleneck: rows of the encoder's last Linear and its LayerNorm, columns 0.. of the
        decoder's first Linear."""
        enc_out, enc_norm, dec_in = self.encoder[-2], self.encoder[-1], self.decoder[0]
        return [Coupling("bottleneck", enc_out.out_features, [enc_out, enc_norm], [(dec_in, 0)])]

    def widths(self) -> dict[str, list[int]]:
        """Output width of every ``nn.Linear`` per component."""
        return {n: [m.out_features for m in c if isinstance(m, nn.Linear)] for n, c in self.components.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


# ---------------------------------------------------------------------------------------- data


def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits (no download), pixels / 16 in [0, 1]: ``(train, test)`` float32."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x = load_digits().data.astype(np.float32) / 16.0
    train, test = train_test_split(x, test_size=test_fraction, random_state=seed)
    return torch.from_numpy(train), torch.from_numpy(test)


# ---------------------------------------------------------------------------------------- train / eval


def train_epochs(model: nn.Module, data: torch.Tensor, epochs: int, opt: torch.optim.Optimizer, batch_size: int,
                 gen: torch.Generator, tracker: ImportanceTracker | None = None, step: int = 0) -> int:
    """Adam on the reconstruction MSE, shuffled minibatches from ``gen``; ``tracker.step`` after every
    update. Returns the update counter."""
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(data), generator=gen).split(batch_size):
            x = data[idx]
            loss = F.mse_loss(model(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if tracker is not None:
                tracker.step(step)
    return step


def adam(model: nn.Module, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel: on this small model the default (foreach) step takes ~2 ms on CPU,
    five times the fused one, and would dominate the run time."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


@torch.no_grad()
def eval_mse(model: nn.Module, data: torch.Tensor) -> float:
    """Mean squared reconstruction error over all test pixels."""
    model.eval()
    return float(F.mse_loss(model(data), data))


def measure_model(model: Autoencoder, data: torch.Tensor) -> dict[str, Any]:
    groups = model_groups(model)
    return {"mse": eval_mse(model, data), "params": count_params(model)["total"],
            "flops": component_flops(model, 1)["total"], "widths": {g.name: g.size for g in groups}}


def finetune_and_measure(model: Autoencoder, train: torch.Tensor, test: torch.Tensor, cfg: AutoencoderConfig,
                         seed: int) -> dict[str, Any]:
    """``mse_before_ft``, then ``finetune_epochs`` of fresh Adam (batch order from ``seed``), then
    :func:`measure_model`."""
    before = eval_mse(model, test)
    if cfg.finetune_epochs:
        opt = adam(model, cfg.lr)
        gen = torch.Generator().manual_seed(10_000 + seed)
        train_epochs(model, train, cfg.finetune_epochs, opt, cfg.batch_size, gen)
    return {"mse_before_ft": before, **measure_model(model, test)}


def run_seed(cfg: AutoencoderConfig, seed: int, train: torch.Tensor, test: torch.Tensor) -> dict[str, Any]:
    """Train one model with the tracker, then prune / fine-tune / measure every metric x ratio."""
    torch.manual_seed(seed)
    if cfg.train_samples:
        train = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[: cfg.train_samples]]
    model = Autoencoder(train.shape[1], tuple(cfg.hidden), cfg.latent, cfg.act)
    tracker = ImportanceTracker(model, TrackingConfig(metrics=list(cfg.metrics), snapshot_interval=0,
                                                      smoothing=cfg.smoothing, normalize=cfg.normalize, seed=seed))
    opt = adam(model, cfg.lr)
    t0 = time.perf_counter()
    steps = train_epochs(model, train, cfg.epochs, opt, cfg.batch_size, torch.Generator().manual_seed(seed), tracker)
    out: dict[str, Any] = {"seed": seed, "updates": steps, "train_s": time.perf_counter() - t0,
                           "trained_mse": eval_mse(model, test)}
    out["dense"] = finetune_and_measure(copy.deepcopy(model), train, test, cfg, seed)
    out["pruned"] = {}
    for metric in cfg.metrics:
        scores = tracker.scores(metric)  # keyed by group name: valid for every deep copy of `model`
        bad = [n for n, s in scores.items() if not bool(torch.isfinite(s).all())]
        if bad:
            raise RuntimeError(f"metric {metric}: non-finite scores in groups {bad}")
        for ratio in cfg.ratios:
            pruned = copy.deepcopy(model)
            prune(pruned, scores, ratio, scope=cfg.scope)
            out["pruned"][(metric, ratio)] = finetune_and_measure(pruned, train, test, cfg, seed)
    return out


# ---------------------------------------------------------------------------------------- summary


def _mean_std(x: list[float]) -> tuple[float, float]:
    a = np.asarray(x, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarize(runs: list[dict[str, Any]], key: Any) -> dict[str, Any]:
    """Mean and std (over seeds, ddof=1) of one configuration; ``key`` = ``"dense"`` or ``(metric, ratio)``."""
    per = [r["dense"] if key == "dense" else r["pruned"][key] for r in runs]
    out: dict[str, Any] = {}
    for k in ("mse", "mse_before_ft", "params", "flops"):
        out[f"{k}_mean"], out[f"{k}_std"] = _mean_std([p[k] for p in per])
    out["per_seed"] = [{"seed": r["seed"], **p} for r, p in zip(runs, per)]
    return out


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    ft = result["config"]["finetune_epochs"]
    t = Table(title=f"Autoencoder on digits: test MSE x1e3 (mean ± std over {result['config']['seeds']} seeds)")
    for col in ("metric", "ratio", "MSE pruned", f"MSE +{ft} ep ft", "params", "kFLOPs/sample"):
        t.add_column(col, justify="left" if col == "metric" else "right")

    def row(name: str, ratio: float, s: dict) -> None:
        t.add_row(name, f"{ratio:.2f}", f"{1e3 * s['mse_before_ft_mean']:.2f} ± {1e3 * s['mse_before_ft_std']:.2f}",
                  f"{1e3 * s['mse_mean']:.2f} ± {1e3 * s['mse_std']:.2f}", f"{s['params_mean']:.0f}",
                  f"{s['flops_mean'] / 1e3:.1f}")

    row("dense", 0.0, result["dense"])
    for ratio in result["config"]["ratios"]:
        for r in sorted((r for r in result["results"] if r["ratio"] == ratio), key=lambda r: r["mse_mean"]):
            row(r["metric"], ratio, r)
    Console(width=120).print(t)


def plot(result: dict[str, Any], path: Path) -> list[Path]:
    """MSE vs FLOPs per sample, one line per metric starting at the dense model; before / after
    fine-tuning side by side; dashed: MSE of predicting the mean training image. Writes ``path.png`` and ``path.svg``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ft = result["config"]["finetune_epochs"]
    panels = [("mse_before_ft", "right after pruning")] + ([("mse", f"after {ft} epochs of fine-tuning")] if ft else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), sharey=True, squeeze=False)
    d = result["dense"]
    for ax, (key, title) in zip(axes[0], panels):
        for metric in result["config"]["metrics"]:
            rs = sorted((r for r in result["results"] if r["metric"] == metric), key=lambda r: r["ratio"])
            x = [d["flops_mean"] / 1e3] + [r["flops_mean"] / 1e3 for r in rs]
            y = [d[f"{key}_mean"]] + [r[f"{key}_mean"] for r in rs]
            e = [d[f"{key}_std"]] + [r[f"{key}_std"] for r in rs]
            ax.errorbar(x, y, yerr=e, marker="o", ms=4, capsize=2, label=metric)
        ax.axhline(result["data"]["mean_image_mse"], color="gray", ls="--", lw=1, label="mean image")
        ax.set_yscale("log")
        ax.set_xlabel("FLOPs per sample (k)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("test reconstruction MSE")
    axes[0][-1].legend(fontsize=8)
    c = result["config"]
    fig.suptitle(f"MLP autoencoder, digits 8x8, {c['scope']} pruning (mean ± std over {c['seeds']} seeds)", fontsize=10)
    fig.tight_layout()
    paths = [path.with_suffix(".png"), path.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=130)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def main(argv: list[str]) -> dict[str, Any]:
    """Run the experiment; returns (and writes) the result dict."""
    t0 = time.perf_counter()
    try:
        cfg = parse_args(argv)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    torch.set_num_threads(cfg.threads)
    train, test = load_digits_split(cfg.test_fraction, cfg.data_seed)
    runs = []
    for seed in range(cfg.seeds):
        runs.append(run_seed(cfg, seed, train, test))
        print(f"seed {seed}: {runs[-1]['updates']} updates in {runs[-1]['train_s']:.1f} s, "
              f"test MSE {runs[-1]['trained_mse']:.5f}", flush=True)
    dense_model = Autoencoder(train.shape[1], tuple(cfg.hidden), cfg.latent, cfg.act)
    result: dict[str, Any] = {
        "command": " ".join(["python benchmarks/autoencoder.py", *argv]),
        "config": dataclasses.asdict(cfg),
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "data": {"dataset": "sklearn digits 8x8", "train": len(train), "test": len(test),
                 "train_used": cfg.train_samples or len(train),
                 # reference: predicting the mean training image for every test image
                 "mean_image_mse": float(F.mse_loss(train.mean(0).expand_as(test), test))},
        "groups": {g.name: {"component": g.component, "kind": g.kind, "size": g.size}
                   for g in model_groups(dense_model)},
        "trained_mse": _mean_std([r["trained_mse"] for r in runs]),
        "dense": summarize(runs, "dense"),
        "results": [{"metric": m, "ratio": r, **summarize(runs, (m, r))} for m in cfg.metrics for r in cfg.ratios],
    }
    result["best_metric"] = {
        str(r): min((x for x in result["results"] if x["ratio"] == r), key=lambda x: x["mse_mean"])["metric"]
        for r in cfg.ratios
    }
    result["best_metric_before_ft"] = {
        str(r): min((x for x in result["results"] if x["ratio"] == r), key=lambda x: x["mse_before_ft_mean"])["metric"]
        for r in cfg.ratios
    }
    print_table(result)
    out = Path(cfg.out)
    out = out if out.is_absolute() else ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    if cfg.plot:
        result["plots"] = [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in plot(result, out)]
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out} ({result['wall_s']} s)")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
