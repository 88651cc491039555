"""The command line of ``benchmarks/autoencoder.py``: :class:`AutoencoderConfig`, its checks and
:func:`parse_args` (``key=value`` through :func:`benchmarks.argv.split_args`, lists comma-separated)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from benchmarks.argv import ArgvError, split_args
from pruning.config import NORMALIZATIONS, SMOOTHINGS
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


#: key -> (parse a command-line string, check the value, what is allowed).
_KEYS: dict[str, tuple[Any, Any, str]] = {
    "seeds": (int, lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "epochs": (int, lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "ratios": (lambda s: [float(x) for x in s.split(",")],
               lambda v: _unique(v) and all(_num(r) and 0 < r < 1 for r in v), "distinct numbers in (0, 1)"),
    "metrics": (lambda s: s.split(","), lambda v: _unique(v) and all(m in metric_names() for m in v),
                f"distinct names of {'|'.join(metric_names())}"),
    "finetune_epochs": (int, lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "scope": (str, lambda v: v in SCOPES, "|".join(SCOPES)),
    "out": (str, lambda v: isinstance(v, str) and v.endswith(".json"), "a path ending in .json"),
    "hidden": (lambda s: [int(x) for x in s.split(",")],
               lambda v: isinstance(v, list) and len(v) > 0 and all(_int(h) and h >= 1 for h in v),
               "a non-empty list of integers >= 1"),
    "latent": (int, lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "act": (str, lambda v: v in ACTIVATIONS, "|".join(ACTIVATIONS)),
    "lr": (float, lambda v: _num(v) and v > 0, "a number > 0"),
    "batch_size": (int, lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "train_samples": (int, lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = all)"),
    "test_fraction": (float, lambda v: _num(v) and 0 < v < 1, "a number in (0, 1)"),
    "data_seed": (int, lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "smoothing": (str, lambda v: v in SMOOTHINGS, "|".join(SMOOTHINGS)),
    "normalize": (str, lambda v: v in NORMALIZATIONS, "|".join(NORMALIZATIONS)),
    "threads": (int, lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "plot": (lambda s: {"true": True, "false": False}.get(s.lower(), s), lambda v: isinstance(v, bool), "true|false"),
}


class ConfigError(ValueError):
    """A benchmark key has an invalid value; the message is one line."""


def validate(cfg: AutoencoderConfig) -> AutoencoderConfig:
    """Check every key; raises :class:`ConfigError` ``invalid config: key=value; allowed: ...``."""
    for f in dataclasses.fields(cfg):
        _, ok, allowed = _KEYS[f.name]
        if not ok(getattr(cfg, f.name)):
            raise ConfigError(f"invalid config: {f.name}={getattr(cfg, f.name)!r}; allowed: {allowed}")
    return cfg


def parse_args(argv: list[str]) -> AutoencoderConfig:
    """``key=value`` arguments -> validated config; unknown keys and bad values raise :class:`ConfigError`."""
    try:
        raw = split_args(argv, _KEYS)  # the benchmarks' one argv parser; the values are converted here
    except ArgvError as err:
        raise ConfigError(str(err)) from None
    values: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            values[k] = _KEYS[k][0](v)
        except ValueError:
            raise ConfigError(f"invalid config: {k}={v!r}; allowed: {_KEYS[k][2]}") from None
    return validate(AutoencoderConfig(**values))
