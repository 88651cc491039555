"""Check a Hydra launcher preset (conf/hydra/launcher/*.yaml) for the keys a sweep needs.

    python scripts/slurm/validate_launcher.py conf/hydra/launcher/slurm.yaml [more.yaml ...]

Prints ``ok: PATH`` per good preset; otherwise one line ``error: PATH: ...`` per bad preset and exit 2.
The checks live in ``tdmpc/launcher.py`` (which also runs them at the start of every multirun of
``scripts/train.py`` and ``scripts/prune.py``); see there why the file and not the composed config.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from tdmpc.launcher import REQUIRED, LauncherError, validate_launcher  # noqa: E402

__all__ = ["REQUIRED", "LauncherError", "validate_launcher"]


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
