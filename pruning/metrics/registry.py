"""The metric registry: name -> :class:`~pruning.metrics.base.ImportanceMetric` subclass.

A new metric is one class registered with :func:`register` (see ``docs/extending.md``); the tracker,
config validation, the prune job and the main job read the registry, so nothing else needs editing.
"""

from __future__ import annotations

from pruning.metrics.base import ImportanceMetric

_REGISTRY: dict[str, type[ImportanceMetric]] = {}


def register(cls: type[ImportanceMetric]) -> type[ImportanceMetric]:
    """Class decorator: register ``cls`` under ``cls.name`` (a new name, or the same class again)."""
    if not (isinstance(cls, type) and issubclass(cls, ImportanceMetric)):
        raise TypeError(f"register() takes an ImportanceMetric subclass, got {cls!r}")
    if not cls.name or not cls.name.isidentifier():
        raise ValueError(f"metric class {cls.__name__} needs a `name` that is an identifier, got {cls.name!r}")
    old = _REGISTRY.get(cls.name)
    if old is not None and old.__qualname__ != cls.__qualname__:
        raise ValueError(f"metric {cls.name!r} is already registered by {old.__module__}.{old.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a registered metric (tests that register their own)."""
    _REGISTRY.pop(name, None)


def metric_class(name: str) -> type[ImportanceMetric]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; registered: {'|'.join(metric_names())}") from None


def metric_names() -> tuple[str, ...]:
    """Every registered metric, in registration order."""
    return tuple(_REGISTRY)


def tracked_metrics() -> tuple[str, ...]:
    """Registered metrics that accumulate evidence during training (need the training run's state)."""
    return tuple(n for n, c in _REGISTRY.items() if c.tracked)
