"""The one ``key=value`` command-line parser of the benchmarks (they take no Hydra config).

``parse_args(["repeats=5"], {"repeats": 30, "out": "x.json"})`` -> ``{"repeats": 5, "out": "x.json"}``:
each value is converted to the type of its default (int, float, bool from ``true|false|1|0``, str).
An unknown key or an unconvertible value exits with status 2 and one line naming the key, the value and
what is allowed (:func:`fail`). ``passthrough=True`` keeps keys without a default as strings (a benchmark
that hands them on to another command line, e.g. ``scripts/train.py``).

:func:`split_args` is the first half alone (``key=value`` pairs of known keys, as strings; raises
:class:`ArgvError`), for a benchmark that converts and validates its values itself.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


class ArgvError(ValueError):
    """An argument is not ``key=value`` with a known key, or its value does not convert; one line."""


def fail(message: str) -> None:
    """Print ``error: message`` to stderr and exit with status 2 (a user error)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def split_args(argv: list[str], keys: Iterable[str] | None) -> dict[str, str]:
    """``key=value`` arguments -> ``{key: value}`` (strings; a later repeat wins). ``keys=None`` accepts
    any key; otherwise an argument without ``=`` or with another key raises :class:`ArgvError`."""
    allowed = None if keys is None else list(keys)
    out: dict[str, str] = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or not key or (allowed is not None and key not in allowed):
            what = f"keys: {', '.join(allowed)}" if allowed is not None else "key=value"
            raise ArgvError(f"unknown argument {item!r}; allowed {what}")
        out[key] = value
    return out


def _convert(key: str, value: str, default: Any) -> Any:
    kind = type(default)
    if kind is bool:
        if value.lower() not in ("true", "false", "1", "0"):
            raise ArgvError(f"invalid argument {key}={value!r}; allowed: true|false")
        return value.lower() in ("true", "1")
    if kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            raise ArgvError(f"invalid argument {key}={value!r}; allowed: "
                            f"{'an integer' if kind is int else 'a number'}") from None
    return value


def parse_args(argv: list[str], defaults: dict[str, Any], passthrough: bool = False) -> dict[str, Any]:
    """``defaults`` updated from ``argv`` (values converted to the defaults' types); exits 2 on a bad one."""
    args = dict(defaults)
    try:
        for key, value in split_args(argv, None if passthrough else defaults).items():
            args[key] = _convert(key, value, defaults[key]) if key in defaults else value
    except ArgvError as err:
        fail(str(err))
    return args
