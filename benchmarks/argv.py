"""The one ``key=value`` command-line parser of the benchmarks (they take no Hydra config).

``parse_args(["repeats=5"], {"repeats": 30, "out": "x.json"})`` -> ``{"repeats": 5, "out": "x.json"}``:
each value is converted to the type of its default (int, float, bool from ``true|false|1|0``, str).
An unknown key or an unconvertible value exits with status 2 and one line naming the key, the value and
what is allowed.
"""

from __future__ import annotations

import sys
from typing import Any


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _convert(key: str, value: str, default: Any) -> Any:
    kind = type(default)
    if kind is bool:
        if value.lower() not in ("true", "false", "1", "0"):
            _fail(f"invalid argument {key}={value!r}; allowed: true|false")
        return value.lower() in ("true", "1")
    if kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            _fail(f"invalid argument {key}={value!r}; allowed: {'an integer' if kind is int else 'a number'}")
    return value


def parse_args(argv: list[str], defaults: dict[str, Any]) -> dict[str, Any]:
    args = dict(defaults)
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            _fail(f"unknown argument {item!r}; allowed: {', '.join(f'{k}=...' for k in defaults)}")
        args[key] = _convert(key, value, defaults[key])
    return args
