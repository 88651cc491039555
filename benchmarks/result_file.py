"""Writing a benchmark's result: one JSON file (indented, newline-terminated), its folder created."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_result(path: str | Path, result: Any) -> Path:
    """Write ``result`` as JSON to ``path`` (parents created), print where, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return path
