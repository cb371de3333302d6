"""The comparison report (`python -m saeeval.report outputs/`): finished runs side by side in one self-contained
HTML page, with its PNGs.

The page embeds every chart as a base64 PNG and inlines its CSS and script, so it opens offline and can be mailed.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Any

from matplotlib.figure import Figure

from saeeval._version import __version__
from saeeval.features.display import TOP_HEAD, faithfulness_figure, heatmap_figure, top_rows
from saeeval.features.files import read_features
from saeeval.publish.runs import Run, by_task, load_runs
from saeeval.render import charts
from saeeval.render.catalog import UNRELIABLE_LEGEND, any_flagged, cell, flagged, fmt, metrics, present, reconstructions
from saeeval.results.files import atomic_write_bytes, atomic_write_text


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    """An HTML table; cells are escaped, columns from `numeric_from` are right-aligned."""
    th = "".join(f"<th{' class=num' if i >= numeric_from else ''}>{html.escape(h)}</th>" for i, h in enumerate(head))
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if i >= numeric_from else ''}>{html.escape(fmt(c))}</td>" for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<div class=scroll><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


class _Page:
    """Collects the page's sections and writes each chart both as a PNG file and as a data URI."""

    def __init__(self, files_dir: Path) -> None:
        self.files_dir = files_dir
        self.parts: list[str] = []
        self.n_images = 0

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def figure(self, fig: Figure | None, name: str, caption: str, missing: str) -> None:
        if fig is None:
            self.add(f"<p class=note>{html.escape(missing)}</p>")
            return
        buf = io.BytesIO()
        charts.save_figure(fig, buf)
        png = buf.getvalue()
        atomic_write_bytes(self.files_dir / f"{name}.png", png)
        self.n_images += 1
        src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        self.add(
            f'<figure><img src="{src}" alt="{html.escape(caption)}" data-chart="{html.escape(name)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )


def _summary(runs: Sequence[Run]) -> str:
    head = (
        "run",
        "folder",
        "config that differs",
        "model",
        "task",
        "n examples",
        "config hash",
        "clean accuracy",
        "clean logit diff",
        "saeeval",
    )
    rows = []
    for r in runs:
        clean = ((r.doc["conditions"].get("clean") or {}).get("task")) or {}
        rows.append(
            (
                r.rid,
                r.folder,
                "; ".join(r.differs) or None,
                r.doc["model"].get("name"),
                r.task,
                r.doc["task"].get("n_examples"),
                r.doc.get("config_hash"),
                clean.get("accuracy"),
                clean.get("logit_diff"),
                r.doc.get("saeeval_version"),
            )
        )
    legend = "".join(
        f'<li><span class=swatch style="background:{r.color}"></span>{html.escape(r.label)}</li>' for r in runs
    )
    return f"<ul class=legend>{legend}</ul>" + _table(head, rows, numeric_from=5)


def _conditions_table(runs: Sequence[Run]) -> str:
    """Every condition of every run × the declared task and LM metrics any of them reports."""
    conds = [(r, name, c) for r in runs for name, c in r.doc["conditions"].items()]
    decls = present(metrics("task", "lm"), [c.get(m) or {} for _, _, c in conds for m in ("task", "lm")])
    rows = [
        (
            r.rid,
            name,
            len(c.get("saes") or []) if name != "clean" else None,
            c.get("ablation"),
            *(
                cell(m, c.get(m.section) or {}, c, ".4g") if flagged(c, m.key) else m.value(c.get(m.section) or {})
                for m in decls
            ),
        )
        for r, name, c in conds
    ]
    table = _table(("run", "condition", "SAEs", "ablation", *(m.label for m in decls)), rows, numeric_from=2)
    if any(any_flagged(r.doc["conditions"]) for r in runs):
        table += f"<p class=note>{html.escape(UNRELIABLE_LEGEND)}</p>"
    return table


def _generation_table(runs: Sequence[Run]) -> str | None:
    """Every condition of every run that generated × the declared generation metrics, then per slice."""
    conds = [(r, name, c["generation"]) for r in runs for name, c in r.doc["conditions"].items() if c.get("generation")]
    if not conds:
        return None
    decls = present(metrics("generation"), [g for *_, g in conds])
    rows = [(r.rid, name, *(m.value(g) for m in decls), g.get("n")) for r, name, g in conds]
    sliced = [
        (r.rid, key, name, *(m.value(s["generation"]) for m in decls), s["generation"].get("n"))
        for r in runs
        for key, per in (r.doc.get("slices") or {}).items()
        for name, s in per.items()
        if s.get("generation")
    ]
    labels = [m.label for m in decls]
    return (
        _table(("run", "condition", *labels, "n"), rows, numeric_from=2)
        + "<p class=sub>Per slice:</p>"
        + _table(("run", "slice", "condition", *labels, "n"), sliced, numeric_from=3)
    )


def _reconstruction_table(runs: Sequence[Run]) -> str | None:
    """One row per run, condition and spliced SAE × the declared reconstruction metrics."""
    recons = [(r.rid, *rec) for r in runs for rec in reconstructions(r.doc["conditions"])]
    if not recons:
        return None
    decls = present(metrics("reconstruction"), [v for *_, v in recons])
    rows = [(rid, name, hook, *(m.value(v) for m in decls)) for rid, name, hook, v in recons]
    return _table(("run", "condition", "hook", *(m.label for m in decls)), rows, numeric_from=3)


def _gaps_table(runs: Sequence[Run]) -> str | None:
    def span(g: Mapping[str, Any], metric: str) -> str | None:
        lo, hi = g.get(f"{metric}_lowest"), g.get(f"{metric}_highest")
        return None if lo is None or hi is None else f"{lo} → {hi}"

    rows = [
        (r.rid, cond, g.get("accuracy_gap"), span(g, "accuracy"), g.get("logit_diff_gap"), span(g, "logit_diff"))
        for r in runs
        for cond, g in ((r.doc.get("gaps") or {}).get("identity") or {}).items()
    ]
    head = ("run", "condition", "accuracy gap", "lowest → highest", "logit diff gap", "lowest → highest")
    return _table(head, rows, numeric_from=2) if rows else None


def _features_of(runs: Sequence[Run]) -> list[tuple[Run, dict[str, Any]]]:
    """The runs of one task that ran feature attribution, with their features.json."""
    return [(r, doc) for r in runs if (doc := read_features(r.path)) is not None]


def _features_part(page: _Page, slug: str, runs: Sequence[Run]) -> None:
    """Feature attribution (runs with features=attribution): top latents per run and SAE, the latents that differ
    most between slice values, the faithfulness curves and each run's heat-map."""
    found = _features_of(runs)
    if not found:
        return
    page.add(
        f'<h3 id="features-{slug}">Feature attribution</h3><p class=sub>Latents ranked by |attribution| of the '
        "logit difference; the ablation ΔLD is measured exactly (that latent alone set to the baseline at the "
        "positions, SAE spliced with its error term), with 95% CIs over examples.</p>"
    )
    head = ("run", "SAE", "method · baseline · positions", "rank corr.", *TOP_HEAD)

    def how(doc: Mapping[str, Any]) -> str:
        return f"{doc.get('method')} · {doc.get('baseline')} · {', '.join(map(str, doc.get('positions') or ['all']))}"

    rows = [
        (r.rid, name, how(doc), s.get("rank_correlation"), *row)
        for r, doc in found
        for name, s in doc["saes"].items()
        for row in top_rows(s)
    ]
    page.add(_table(head, rows, numeric_from=3))
    diff = [
        (r.rid, name, fld, d["feature"], d["spread"], f"{d['lowest']} → {d['highest']}")
        for r, doc in found
        for name, s in doc["saes"].items()
        for fld, ds in (s.get("differing") or {}).items()
        for d in ds
    ]
    if diff:
        page.add(
            "<p class=sub>Latents whose mean attribution differs most between the values of a slice field "
            "(highest − lowest):</p>"
            + _table(("run", "SAE", "field", "latent", "spread", "lowest → highest"), diff, numeric_from=3)
        )
    page.figure(
        faithfulness_figure([(r.rid, doc) for r, doc in found]),
        f"{slug}_features_faithfulness",
        "Fraction of the clean logit difference kept when the top-k latents are ablated together, per run "
        "and SAE (1 = nothing lost, dashed).",
        "No run measured a faithfulness curve.",
    )
    for r, doc in found:
        page.figure(
            heatmap_figure(doc),
            f"{slug}_features_heatmap_{_slug(r.rid)}",
            f"{r.rid}: exact effect of ablating each top latent alone, per example (rows) and latent "
            "(columns); red lowers the logit difference, blue raises it.",
            f"{r.rid} has no per-example effects.",
        )


def _task_section(page: _Page, task: str, runs: Sequence[Run]) -> None:
    slug = _slug(task)
    page.add(
        f'<section id="task-{slug}"><h2>Task: {html.escape(task)}</h2>'
        f"<p class=sub>{len(runs)} run(s): {html.escape(', '.join(r.rid for r in runs))}</p>"
    )
    page.add("<h3>Logit difference</h3>")
    page.figure(
        charts.logit_diff_chart(runs, task),
        f"{slug}_logit_diff",
        "Mean logit(correct) − logit(incorrect) per condition (rows) and run (colours); error bars are 95% "
        "confidence intervals, hatched bars are ablation baselines.",
        "No run of this task reports a logit difference.",
    )
    page.add("<h3>Fraction of logit difference recovered</h3>")
    page.figure(
        charts.recovered_chart(runs, task),
        f"{slug}_recovered",
        "(LD spliced − LD ablated) / (LD clean − LD ablated) per SAE condition: 1 means the SAE keeps all "
        "of the behaviour (dashed line), 0 means it does no better than ablating the hook.",
        "No condition of this task has a fraction recovered (it needs an ablation baseline and a logit diff).",
    )
    page.add("<h3>CE loss delta against L0</h3>")
    page.figure(
        charts.frontier_chart(runs, task),
        f"{slug}_ce_vs_l0",
        "The sparsity/fidelity frontier: each point is one SAE condition of one run; x is its L0 (summed over "
        "its SAEs), y the increase in next-token cross-entropy when it is spliced in.",
        "No SAE condition of this task reports both L0 and a CE loss delta.",
    )
    if charts.identity_slices(runs):
        page.add("<h3>Identity slices</h3>")
        page.figure(
            charts.identity_heatmap(runs, task),
            f"{slug}_identity_slices",
            "Accuracy (top) and mean logit diff (bottom) on each identity's examples, per run and condition; "
            "colour scales span the values shown, grey cells are missing.",
            "",
        )
        gaps = _gaps_table(runs)
        if gaps:
            page.add("<p class=sub>Spread across identities (highest − lowest):</p>" + gaps)
    _features_part(page, slug, runs)
    page.add("<h3>Conditions</h3>" + _conditions_table(runs))
    generated = _generation_table(runs)
    if generated:
        page.add(
            "<h3>Generated answers</h3><p class=sub>Greedy generation under each condition, the answer read "
            "with the task's answer_regex; agreement: the parsed answer is the one the logit difference "
            "prefers.</p>" + generated
        )
    recon = _reconstruction_table(runs)
    page.add("<h3>Reconstruction</h3>" + (recon or "<p class=note>No condition of this task splices an SAE.</p>"))
    page.add("</section>")


def render(runs: Sequence[Run], files_dir: Path) -> str:
    """The whole HTML page; charts are also written as PNGs into `files_dir`."""
    files_dir.mkdir(parents=True, exist_ok=True)
    for old in files_dir.glob("*.png"):
        old.unlink()
    page = _Page(files_dir)
    groups = by_task(runs)
    for task, task_runs in groups.items():
        _task_section(page, task, task_runs)
    toc = "".join(
        f'<li><a href="#task-{_slug(t)}">{html.escape(t)}</a> ({len(rs)} runs)'
        + (f' <a class=sub-link href="#features-{_slug(t)}">feature attribution</a>' if _features_of(rs) else "")
        + "</li>"
        for t, rs in groups.items()
    )
    template = Template(files("saeeval.publish").joinpath("report_template.html").read_text(encoding="utf-8"))
    return template.substitute(
        title=html.escape(f"saeeval comparison: {', '.join(groups)}"),
        meta=html.escape(
            f"{len(runs)} runs · generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by saeeval {__version__}"
        ),
        toc=toc,
        summary=_summary(runs),
        body="\n".join(page.parts),
        n_images=page.n_images,
    )


def build_report(paths: list[Path], out: Path) -> Path:
    """Write the comparison page `out` (and its PNGs in `<out stem>_files/`) for every run under `paths`."""
    return write_report(load_runs(paths), Path(out))


def write_report(runs: Sequence[Run], out: Path) -> Path:
    """Write the page for `runs` to `out` (atomically) and its PNGs beside it."""
    atomic_write_text(out, render(runs, out.parent / f"{out.stem}_files"))
    return out
