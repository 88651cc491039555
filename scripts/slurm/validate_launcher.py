"""Check a Hydra launcher preset (conf/hydra/launcher/*.yaml) for the keys a sweep needs.

    python scripts/slurm/validate_launcher.py conf/hydra/launcher/slurm.yaml [more.yaml ...]

Prints ``ok: PATH`` per good preset; otherwise one line ``error: PATH: ...`` per bad preset and exit 2.

Why a check of the file and not of the composed config: hydra-submitit-launcher's schema
(``SlurmQueueConf``) gives every key a default (``timeout_min: 60``, ``array_parallelism: 256``,
``mem_gb: null`` ...), so a preset that forgets a key still composes and silently submits with the
schema default; only the preset file tells that the key was never chosen. Keys inherited from another
preset of the same folder (``defaults: [slurm]``) count as present.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: Keys every preset must set, per submitit executor (``defaults: [submitit_slurm|submitit_local]``).
REQUIRED = {
    "submitit_slurm": ("partition", "timeout_min", "cpus_per_task", "gpus_per_node", "mem_gb", "array_parallelism"),
    "submitit_local": ("timeout_min", "cpus_per_task", "gpus_per_node", "mem_gb"),
}
#: Keys that may be null (null: the cluster's default).
NULLABLE = ("partition", "account")
#: Smallest allowed value of the integer keys.
MINIMUM = {"timeout_min": 1, "cpus_per_task": 1, "gpus_per_node": 0, "mem_gb": 1, "array_parallelism": 1}


class LauncherError(ValueError):
    """A launcher preset lacks a required key or has a bad value; the message is one line."""


def _load(path: Path, seen: tuple[Path, ...] = ()) -> tuple[str | None, dict]:
    """(executor, keys) of a preset, following ``defaults`` to sibling presets (later entries win)."""
    import yaml

    if path in seen:
        raise LauncherError(f"{path}: defaults form a cycle ({' -> '.join(p.name for p in (*seen, path))})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise LauncherError(f"{path}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise LauncherError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise LauncherError(f"{path}: expected a mapping of launcher keys, got {type(data).__name__}")
    executor, keys = None, {}
    for entry in data.pop("defaults", None) or []:
        name = entry if isinstance(entry, str) else None
        if name in REQUIRED:
            executor = name
        elif name and name != "_self_" and (path.parent / f"{name}.yaml").is_file():
            executor, inherited = _load(path.parent / f"{name}.yaml", (*seen, path))
            keys.update(inherited)
    keys.update(data)
    return executor, keys


def validate_launcher(path: str | Path) -> dict:
    """Return the preset's keys; raise :class:`LauncherError` (one line naming file, key, allowed)."""
    path = Path(path)
    executor, keys = _load(path)
    if executor is None:
        raise LauncherError(f"{path}: defaults must include one of {', '.join(REQUIRED)} (or a preset that does)")
    missing = [k for k in REQUIRED[executor] if k not in keys]
    if missing:
        raise LauncherError(f"{path}: missing required key(s) {', '.join(missing)} for {executor}; "
                            f"required: {', '.join(REQUIRED[executor])}")
    for key in REQUIRED[executor]:
        value = keys[key]
        if value is None and key in NULLABLE:
            continue
        if key in MINIMUM:
            if isinstance(value, bool) or not isinstance(value, int) or value < MINIMUM[key]:
                raise LauncherError(f"{path}: {key}={value!r}; allowed: an integer >= {MINIMUM[key]}")
        elif not isinstance(value, str) or not value or value == "???":
            raise LauncherError(f"{path}: {key}={value!r}; allowed: a name, or null for the cluster's default")
    return keys


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[2].strip())
        return 0 if argv else 2
    bad = 0
    for arg in argv:
        try:
            validate_launcher(arg)
            print(f"ok: {arg}")
        except LauncherError as err:
            print(f"error: {err}", file=sys.stderr)
            bad += 1
    return 2 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
