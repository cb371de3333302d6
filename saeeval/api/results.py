"""`Results`: one run's results in Python — what `saeeval.evaluate` returns and `Results.load(folder)` reads.

A thin view over the results document (saeeval.results.document) and its samples; saving writes exactly the files the
CLI writes (results.json + samples.jsonl), so a notebook run and a CLI run can be compared by the same report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group

from saeeval.render.catalog import SECTIONS, as_number, metrics
from saeeval.results.files import load_document, write_results
from saeeval.results.schema import SAMPLES_FILE

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

_META = ("saes", "hooks", "ablation", "baseline", "unreliable")


class Results:
    """The results document (`.document`, the results.json contract) and its per-example samples."""

    def __init__(
        self,
        document: Mapping[str, Any],
        samples: Sequence[Mapping[str, Any]] | None = None,
        features: Mapping[str, Any] | None = None,
    ) -> None:
        self.document: dict[str, Any] = dict(document)
        self.samples: list[dict[str, Any]] | None = None if samples is None else [dict(s) for s in samples]
        self.features: dict[str, Any] | None = None if features is None else dict(features)
        """features.json (run with features=attribution): per SAE its top latents, faithfulness curve, slices."""

    @property
    def conditions(self) -> dict[str, Any]:
        """Condition name -> its `task`, `lm` and `reconstruction` metrics (clean first)."""
        return self.document["conditions"]

    @property
    def slices(self) -> dict[str, Any]:
        """`<field>=<value>` -> condition -> that slice's statistics (empty for tasks without answers)."""
        return self.document.get("slices") or {}

    @property
    def gaps(self) -> dict[str, Any]:
        """Slice field -> condition -> spread of accuracy and logit diff across its values."""
        return self.document.get("gaps") or {}

    def to_pandas(self) -> pandas.DataFrame:
        """One row per condition: saes, hooks, ablation, baseline, unreliable (the scores flagged ill-conditioned),
        then every task, lm and generation metric as `task/<metric>`, `lm/<metric>`, `generation/<metric>` and every
        reconstruction metric as `reconstruction/<hook>/<metric>` —
        declared metrics first (saeeval.render.catalog), then any other number the document holds. A value marked
        "nan" (outputs became non-finite) is float NaN here; null (not applicable) is None."""
        import pandas as pd

        rows = {name: _row(c) for name, c in self.conditions.items()}
        columns = list(dict.fromkeys(k for r in rows.values() for k in r))
        order = {f"{m.section}/{m.key}": i for i, m in enumerate(metrics(derived=False))}

        def rank(col: str) -> tuple[int, int]:
            if col in _META:
                return (0, _META.index(col))
            metric_of = col if not col.startswith("reconstruction/") else "reconstruction/" + col.rsplit("/", 1)[1]
            return (1, order.get(metric_of, len(order)))

        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame = frame[sorted(columns, key=rank)]
        frame.index.name = "condition"
        return frame

    def table(self, width: int | None = None) -> Group:
        """The terminal tables (task; LM damage and reconstruction) fitted to `width` columns (default: the
        console's width); print with `rich.print(results.table())`."""
        from rich.console import Console

        from saeeval.render.table import results_tables

        return results_tables(self.document, width or Console().width)

    def plot(self) -> Figure | None:
        """The logit-difference chart (95% CIs, ablation baselines hatched); None when the task has no answers."""
        from saeeval.render.charts import run_logit_diff_chart

        return run_logit_diff_chart(self.document)

    def save(self, folder: str | Path) -> Path:
        """Write features.json (if any), samples.jsonl and results.json into `folder` (the CLI's files; results.json
        last, it marks the run complete); returns results.json's path."""
        from saeeval.features.files import remove_features, write_features

        if self.features is not None:
            write_features(Path(folder), self.features)
        else:
            remove_features(Path(folder))  # a forced rerun without features leaves no stale features.json
        return write_results(Path(folder), self.document, self.samples)

    def feature_table(self) -> Group:
        """The rich tables of the top latents per SAE (empty without features); print with `rich.print`."""
        from saeeval.features.display import features_tables

        return features_tables(self.features or {})

    def feature_plots(self) -> dict[str, Figure]:
        """The feature heat-map and faithfulness charts (file name -> Figure; empty without features)."""
        if not self.features:
            return {}
        from saeeval.features.display import faithfulness_figure, heatmap_figure
        from saeeval.features.files import FAITHFULNESS_FILE, HEATMAP_FILE

        figs = {
            HEATMAP_FILE: heatmap_figure(self.features),
            FAITHFULNESS_FILE: faithfulness_figure([("", self.features)]),
        }
        return {name: fig for name, fig in figs.items() if fig is not None}

    @classmethod
    def load(cls, folder: str | Path) -> Results:
        """Read a run folder (or its results.json) written by the CLI or `save`."""
        path = Path(folder)
        doc = load_document(path)
        samples_path = (path if path.is_dir() else path.parent) / SAMPLES_FILE
        samples = None
        if samples_path.is_file():
            lines = samples_path.read_text(encoding="utf-8").splitlines()
            samples = [json.loads(line) for line in lines if line.strip()]
        from saeeval.features.files import read_features

        return cls(doc, samples, read_features(path, doc.get("config_hash")))

    def __repr__(self) -> str:
        t = self.document.get("task", {})
        return (
            f"Results(task={t.get('name')!r}, model={self.document.get('model', {}).get('name')!r}, "
            f"n_examples={t.get('n_examples')}, conditions={list(self.conditions)})"
        )


def _row(c: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {k: c.get(k) for k in _META}
    for section in (SECTIONS[0], SECTIONS[1], "generation"):
        row.update({f"{section}/{k}": as_number(v) for k, v in (c.get(section) or {}).items()})
    for hook, r in (c.get("reconstruction") or {}).items():
        row.update({f"reconstruction/{hook}/{k}": as_number(v) for k, v in r.items()})
    return row
