"""The metric registry: name -> :class:`~pruning.metrics.base.ImportanceMetric` subclass.

A new metric is one class registered with :func:`register` (see ``docs/extending.md``); the tracker,
config validation, the prune job and the main job read the registry, so nothing else needs editing.
"""

from __future__ import annotations

from pruning.metrics.base import ImportanceMetric

_REGISTRY: dict[str, type[ImportanceMetric]] = {}
#: Order of the built-in metrics in listings (registration order depends on import order); metrics
#: registered by users follow, in registration order.
BUILTIN_ORDER = ("grad_acc", "fisher", "bayes", "taylor", "grad_sq", "l1", "l2", "l1_group", "l2_group", "random")


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
    """Every registered metric: the built-ins in :data:`BUILTIN_ORDER`, then the others as registered."""
    builtin = [n for n in BUILTIN_ORDER if n in _REGISTRY]
    return (*builtin, *(n for n in _REGISTRY if n not in BUILTIN_ORDER))


def tracked_metrics() -> tuple[str, ...]:
    """Registered metrics that accumulate evidence during training (need the training run's state)."""
    return tuple(n for n in metric_names() if _REGISTRY[n].tracked)
