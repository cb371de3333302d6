"""results.json / samples.jsonl on disk: written atomically, read back and checked, and the config hash of a
finished run (what lets a rerun skip it)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from saeeval.errors import SaeevalError
from saeeval.results.schema import RESULTS_FILE, SAMPLES_FILE, SCHEMA_VERSION


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`atomic_write_text` for bytes (the report's PNGs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(out_dir: Path, doc: Mapping[str, Any], samples: Iterable[Mapping[str, Any]] | None) -> Path:
    """Write samples.jsonl (if any) first and results.json last: a results.json means the run is complete."""
    out_dir = Path(out_dir)
    if samples is not None:
        atomic_write_text(out_dir / SAMPLES_FILE, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    path = out_dir / RESULTS_FILE
    atomic_write_text(path, json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    return path


def read_results(path: Path) -> dict[str, Any]:
    """Read a results.json (or the one inside a folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_document(path: Path) -> dict[str, Any]:
    """Read and check a results.json (or the one in a folder); a file that is not one is a SaeevalError naming it."""
    path = Path(path)
    try:
        doc = read_results(path)
    except (OSError, ValueError) as err:
        raise SaeevalError(f"cannot read {path}: {err}; re-run that job or leave it out") from None
    if not (isinstance(doc, dict) and isinstance(doc.get("conditions"), dict) and isinstance(doc.get("task"), dict)):
        raise SaeevalError(f"{path} is not a saeeval results file (no 'conditions'/'task'); leave it out")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise SaeevalError(
            f"{path} has schema_version {doc.get('schema_version')!r}, this saeeval reads {SCHEMA_VERSION}; "
            "use the saeeval version that wrote it"
        )
    doc.setdefault("model", {})
    return doc


def completed_hash(out_dir: Path) -> str | None:
    """The config hash of the complete results.json in `out_dir`; None when there is none or it is unreadable."""
    try:
        doc = read_results(Path(out_dir) / RESULTS_FILE)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("schema_version") != SCHEMA_VERSION or "conditions" not in doc:
        return None
    return doc.get("config_hash")


def flat_numbers(node: Any, prefix: str = "") -> dict[str, float]:
    """Every number under a results-document node as {"/a/b/c": value} (None, strings and the "nan" mark left
    out): what the precision and GPU checks compare run against run."""
    out: dict[str, float] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(flat_numbers(value, f"{prefix}/{key}"))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        out[prefix] = float(node)
    return out
