"""features.json on disk: written atomically, read back (only when it belongs to the folder's results), removed.

Every reader of a finished run (the CLI, `Results`, the HTML report, the loggers) works from this file alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from saeeval.results.files import atomic_write_text, read_results
from saeeval.results.schema import RESULTS_FILE

FEATURES_FILE = "features.json"
HEATMAP_FILE = "features_heatmap.png"
FAITHFULNESS_FILE = "features_faithfulness.png"
_FLAT_LIST = re.compile(r"\[[^\[\]{}]*\]")


def write_features(folder: Path, doc: Mapping[str, Any]) -> Path:
    """Write features.json atomically (before results.json: a results.json means the run is complete)."""
    path = Path(folder) / FEATURES_FILE
    text = json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False)
    # flat lists (CIs, the per-example rows) on one line each: readable, and a third of the size
    text = _FLAT_LIST.sub(lambda m: json.dumps(json.loads(m.group(0)), ensure_ascii=False), text)
    atomic_write_text(path, text + "\n")
    return path


def read_features(folder: Path, config_hash: str | None = None) -> dict[str, Any] | None:
    """The features.json of a run folder (or next to a results.json); None when the run has none, or when
    `config_hash` is given and the file belongs to another config (the folder's results.json reads it)."""
    folder = Path(folder)
    if not folder.is_dir():
        folder = folder.parent
    path = folder / FEATURES_FILE
    if not path.is_file():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    if config_hash is None and (folder / RESULTS_FILE).is_file():
        config_hash = read_results(folder).get("config_hash")
    if config_hash is not None and doc.get("config_hash") not in (None, config_hash):
        return None
    return doc


def remove_features(folder: Path) -> None:
    """Remove a run folder's feature files (before writing the results of a run without features)."""
    for name in (FEATURES_FILE, HEATMAP_FILE, FAITHFULNESS_FILE):
        (Path(folder) / name).unlink(missing_ok=True)
