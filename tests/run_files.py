"""Reading and comparing run folders in tests: the files a run wrote, and where two JSON trees differ.

Shared by the tests that hold one way of running against another (DDP against one process, SLURM against local).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def load(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A run folder's results.json and samples.jsonl lines."""
    doc = json.loads((folder / "results.json").read_text())
    return doc, [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Every leaf where two JSON trees differ: floats beyond 1e-6 relative, anything else not equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a.keys() ^ b.keys())}"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return [] if math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12) else [f"{path}: {a!r} vs {b!r}"]
    return [] if a == b and type(a) is type(b) else [f"{path}: {a!r} vs {b!r}"]
