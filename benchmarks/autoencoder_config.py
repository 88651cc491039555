"""The command line of ``benchmarks/autoencoder.py``: :class:`AutoencoderConfig`, its checks and
:func:`parse_args` (``key=value`` through :func:`benchmarks.argv.split_args`, lists comma-separated)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from benchmarks.argv import ArgvError, split_args
from pruning.config import NORMALIZATIONS, SMOOTHINGS, PruningConfigError, require
from pruning.metrics import metric_names
from pruning.prune import SCOPES

ACTIVATIONS = {"mish": nn.Mish, "relu": nn.ReLU}
DEFAULT_OUT = "benchmarks/results/autoencoder.json"


@dataclass
class AutoencoderConfig:
    """Keys of ``benchmarks/autoencoder.py`` (``key=value`` on the command line; lists comma-separated).

    ``seeds``: number of seeds (0..seeds-1); ``epochs``: training epochs; ``ratios``: fractions of the
    channels removed (the dense model, ratio 0, is always measured); ``metrics``: subset of
    :func:`pruning.metrics.metric_names`; ``finetune_epochs``: epochs of fine-tuning after pruning (0 = none);
    ``scope``: ranking scope of :func:`pruning.prune.prune`; ``out``: JSON path (plot next to it);
    ``hidden`` / ``latent`` / ``act``: architecture; ``lr``, ``batch_size``: Adam; ``train_samples``:
    use only that many training images (0 = all); ``test_fraction`` / ``data_seed``: the fixed split;
    ``smoothing`` / ``normalize``: tracker scores; ``threads``: torch threads; ``plot``: write PNG/SVG.
    """

    seeds: int = 3
    epochs: int = 100
    ratios: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    metrics: list[str] = field(default_factory=lambda: list(metric_names()))
    finetune_epochs: int = 5
    scope: str = "global"
    out: str = DEFAULT_OUT
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    latent: int = 16
    act: str = "mish"
    lr: float = 1e-3
    batch_size: int = 64
    train_samples: int = 0
    test_fraction: float = 0.2
    data_seed: int = 0
    smoothing: str = "ema"
    normalize: str = "mean"
    threads: int = 1
    plot: bool = True


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _unique(v: list) -> bool:
    return isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v)


def _csv(kind: type):
    return lambda s: [kind(x) for x in s.split(",")]


#: How a command-line string becomes a value (lists are comma-separated); the checks are in :func:`validate`.
_PARSE: dict[str, Any] = {"ratios": _csv(float), "metrics": _csv(str), "hidden": _csv(int),
                          "plot": lambda s: {"true": True, "false": False}.get(s.lower(), s)}

#: Errors of this benchmark's settings: the pruning package's config error (one line: key, value, allowed).
ConfigError = PruningConfigError


def validate(cfg: AutoencoderConfig) -> AutoencoderConfig:
    """Check every key; raises :class:`ConfigError` ``invalid config: key=value; allowed: ...``."""
    c = cfg
    for key in ("seeds", "epochs", "latent", "batch_size", "threads"):
        require(_int(getattr(c, key)) and getattr(c, key) >= 1, key, getattr(c, key), "an integer >= 1")
    require(_unique(c.ratios) and all(_num(r) and 0 < r < 1 for r in c.ratios), "ratios", c.ratios,
            "distinct numbers in (0, 1)")
    require(_unique(c.metrics) and all(m in metric_names() for m in c.metrics), "metrics", c.metrics,
            f"distinct names of {'|'.join(metric_names())}")
    require(_int(c.finetune_epochs) and c.finetune_epochs >= 0, "finetune_epochs", c.finetune_epochs, "an integer >= 0")
    require(c.scope in SCOPES, "scope", c.scope, "|".join(SCOPES))
    require(isinstance(c.out, str) and c.out.endswith(".json"), "out", c.out, "a path ending in .json")
    require(isinstance(c.hidden, list) and len(c.hidden) > 0 and all(_int(h) and h >= 1 for h in c.hidden),
            "hidden", c.hidden, "a non-empty list of integers >= 1")
    require(c.act in ACTIVATIONS, "act", c.act, "|".join(ACTIVATIONS))
    require(_num(c.lr) and c.lr > 0, "lr", c.lr, "a number > 0")
    require(_int(c.train_samples) and c.train_samples >= 0, "train_samples", c.train_samples, "an integer >= 0 (0 = all)")
    require(_num(c.test_fraction) and 0 < c.test_fraction < 1, "test_fraction", c.test_fraction, "a number in (0, 1)")
    require(_int(c.data_seed) and c.data_seed >= 0, "data_seed", c.data_seed, "an integer >= 0")
    require(c.smoothing in SMOOTHINGS, "smoothing", c.smoothing, "|".join(SMOOTHINGS))
    require(c.normalize in NORMALIZATIONS, "normalize", c.normalize, "|".join(NORMALIZATIONS))
    require(isinstance(c.plot, bool), "plot", c.plot, "true|false")
    return cfg


def parse_args(argv: list[str]) -> AutoencoderConfig:
    """``key=value`` arguments -> validated config; unknown keys and bad values raise :class:`ConfigError`.

    A string that does not convert to the key's type is kept as it is, so :func:`validate` names it."""
    fields = {f.name: f.type for f in dataclasses.fields(AutoencoderConfig)}
    try:
        raw = split_args(argv, fields)  # the benchmarks' one argv parser
    except ArgvError as err:
        raise ConfigError(str(err)) from None
    values: dict[str, Any] = {}
    for k, v in raw.items():
        parse = _PARSE.get(k, {"int": int, "float": float}.get(fields[k], str))
        try:
            values[k] = parse(v)
        except ValueError:
            values[k] = v
    return validate(AutoencoderConfig(**values))
