"""The runs a comparison shows: finding results.json files, reading them, and labelling each run.

One place for run loading and labelling, read by the HTML report (saeeval.publish.html_report) and the wandb report
(saeeval.publish.wandb_report).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saeeval.errors import SaeevalError
from saeeval.render.catalog import clip
from saeeval.render.charts import PALETTE
from saeeval.results.files import load_document
from saeeval.results.schema import RESULTS_FILE

# Config keys that tell runs apart, most telling first; keys that only say where/how a run executed are left out.
_LABEL_PRIORITY = ("saes", "model", "splice", "mask", "task")
_LABEL_SKIP = ("hydra", "trainer", "logger", "force", "plot")
_LABEL_KEYS = 3
_LABEL_VALUE_WIDTH = 30


@dataclass
class Run:
    """One finished run: where its results.json is, its document, and how the report names and colours it."""

    path: Path
    doc: dict[str, Any]
    rid: str = ""
    folder: str = ""
    differs: tuple[str, ...] = ()
    color: str = ""

    @property
    def label(self) -> str:
        shown = ", ".join(self.differs[:_LABEL_KEYS]) + (" …" if len(self.differs) > _LABEL_KEYS else "")
        return f"{self.rid} · {self.folder}" + (f" · {shown}" if shown else "")

    @property
    def task(self) -> str:
        return str(self.doc["task"].get("name") or "unnamed task")


def _natural(path: Path) -> list[Any]:
    """Sort key that puts multirun job 10 after job 9."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_results(paths: Sequence[Path]) -> list[Path]:
    """Every results.json named or found (recursively) under the given folders, in natural order."""
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise SaeevalError(f"{p} does not exist; pass run folders, a multirun folder or results.json files")
        for f in sorted(p.rglob(RESULTS_FILE), key=_natural) if p.is_dir() else [p]:
            found[f.resolve()] = None
    if not found:
        raise SaeevalError(
            f"no {RESULTS_FILE} found under {', '.join(map(str, paths)) or 'the given paths'}; "
            "pass the output folders of finished `python -m saeeval` runs"
        )
    return list(found)


def load_run(path: Path) -> Run:
    """Read and check one results.json; a file that is not one raises a SaeevalError naming it."""
    return Run(path=path, doc=load_document(path))


def _flatten(cfg: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(cfg, Mapping):
        out: dict[str, str] = {}
        for k, v in cfg.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(cfg, separators=(",", ":"), default=str).strip('"')}


def label_runs(runs: Sequence[Run]) -> None:
    """Give each run an id (R1, R2, …), its folder relative to the others, its differing config keys and a colour."""
    dirs = [r.path.parent if r.path.name == RESULTS_FILE else r.path.with_suffix("") for r in runs]
    common = Path(os.path.commonpath([str(d) for d in dirs])) if len(dirs) > 1 else None
    flat = [_flatten(r.doc.get("config") or {}) for r in runs]
    rank = {g: i for i, g in enumerate(_LABEL_PRIORITY)}
    keys = sorted(
        (
            k
            for k in dict.fromkeys(k for f in flat for k in f)
            if k.split(".")[0] not in _LABEL_SKIP and not k.endswith("_target_")
        ),
        key=lambda k: rank.get(k.split(".")[0], len(rank)),
    )
    differs: list[list[str]] = [[] for _ in runs]
    for k in keys:
        # task options only mean something between runs of the same task
        peers = {r.task for r in runs} if k.startswith("task.") else {None}
        for task in peers:
            idx = [i for i, r in enumerate(runs) if task is None or r.task == task]
            if len({flat[i].get(k) for i in idx}) > 1:
                for i in idx:
                    differs[i].append(f"{k}={clip(flat[i].get(k, '—'), _LABEL_VALUE_WIDTH)}")
    for i, (run, d) in enumerate(zip(runs, dirs, strict=True)):
        rel = d.relative_to(common).as_posix() if common is not None else d.name
        run.rid, run.folder = f"R{i + 1}", d.name if rel == "." else rel
        run.differs = tuple(differs[i])
        run.color = PALETTE[i % len(PALETTE)]


def load_runs(paths: Sequence[Path]) -> list[Run]:
    """Find, read, check and label every run under `paths`."""
    runs = [load_run(p) for p in find_results(paths)]
    label_runs(runs)
    return runs


def by_task(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs grouped by task name, in order of first appearance."""
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.task, []).append(r)
    return out
