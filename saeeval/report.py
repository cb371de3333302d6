"""`python -m saeeval.report outputs/`: compare finished runs in one self-contained HTML page (+ PNGs, + wandb).

The page embeds every chart as a base64 PNG and inlines its CSS and script, so it opens offline and can be mailed.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Any

from matplotlib.figure import Figure

import saeeval
from saeeval import report_charts as charts
from saeeval.errors import SaeevalError, print_error
from saeeval.results import RESULTS_FILE, SCHEMA_VERSION, atomic_write_text, read_results

_PALETTE = ["#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB", "#000000"]
# Config keys that tell runs apart, most telling first; keys that only say where/how a run executed are left out.
_LABEL_PRIORITY = ("saes", "model", "splice", "mask", "task")
_LABEL_SKIP = ("hydra", "trainer", "logger", "force", "plot")
_LABEL_KEYS = 3
_RECON_COLS = ("mse", "explained_variance", "cosine_similarity", "l0", "l1", "dead_fraction")


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
    try:
        doc = read_results(path)
    except (OSError, ValueError) as err:
        raise SaeevalError(f"cannot read {path}: {err}; re-run that job or leave it out of the report") from None
    ok = isinstance(doc, dict) and isinstance(doc.get("conditions"), dict) and isinstance(doc.get("task"), dict)
    if not ok:
        raise SaeevalError(f"{path} is not a saeeval results file (no 'conditions'/'task'); leave it out of the report")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise SaeevalError(
            f"{path} has schema_version {doc.get('schema_version')!r}, this saeeval reads {SCHEMA_VERSION}; "
            "use the saeeval version that wrote it"
        )
    doc.setdefault("model", {})
    return Run(path=path, doc=doc)


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
        (k for k in dict.fromkeys(k for f in flat for k in f)
         if k.split(".")[0] not in _LABEL_SKIP and not k.endswith("_target_")),
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
                    differs[i].append(f"{k}={_short(flat[i].get(k, '—'))}")
    for i, (run, d) in enumerate(zip(runs, dirs)):
        rel = d.relative_to(common).as_posix() if common is not None else d.name
        run.rid, run.folder = f"R{i + 1}", d.name if rel == "." else rel
        run.differs = tuple(differs[i])
        run.color = _PALETTE[i % len(_PALETTE)]


def _short(text: str, width: int = 30) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt(v: Any) -> str:
    """A table cell: '—' for null, 4 significant digits for floats."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    """An HTML table; cells are escaped, columns from `numeric_from` are right-aligned."""
    th = "".join(f'<th{" class=num" if i >= numeric_from else ""}>{html.escape(h)}</th>' for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i >= numeric_from else ""}>{html.escape(_fmt(c))}</td>'
                         for i, c in enumerate(row)) + "</tr>"
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
        fig.savefig(buf, format="png", dpi=110, metadata={"Software": None}, facecolor="white")
        png = buf.getvalue()
        (self.files_dir / f"{name}.png").write_bytes(png)
        self.n_images += 1
        src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        self.add(f'<figure><img src="{src}" alt="{html.escape(caption)}" data-chart="{html.escape(name)}">'
                 f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _summary(runs: Sequence[Run]) -> str:
    head = ("run", "folder", "config that differs", "model", "task", "n examples", "config hash", "clean accuracy",
            "clean logit diff", "saeeval")
    rows = []
    for r in runs:
        clean = ((r.doc["conditions"].get("clean") or {}).get("task")) or {}
        rows.append((r.rid, r.folder, "; ".join(r.differs) or None, r.doc["model"].get("name"), r.task,
                     r.doc["task"].get("n_examples"), r.doc.get("config_hash"), clean.get("accuracy"),
                     clean.get("logit_diff"), r.doc.get("saeeval_version")))
    legend = "".join(f'<li><span class=swatch style="background:{r.color}"></span>{html.escape(r.label)}</li>'
                     for r in runs)
    return f"<ul class=legend>{legend}</ul>" + _table(head, rows, numeric_from=5)


def _conditions_table(runs: Sequence[Run]) -> str:
    head = ("run", "condition", "SAEs", "ablation", "logit diff", "95% CI", "accuracy", "recovered", "CE loss",
            "ΔCE", "CE score", "KL", "KL score")
    rows = []
    for r in runs:
        for name, c in r.doc["conditions"].items():
            t, lm = c.get("task") or {}, c.get("lm") or {}
            lo, hi = t.get("logit_diff_ci_low"), t.get("logit_diff_ci_high")
            ci = "—" if lo is None or hi is None else f"[{lo:.3g}, {hi:.3g}]"
            rows.append((r.rid, name, len(c.get("saes") or []) if name != "clean" else None, c.get("ablation"),
                         t.get("logit_diff"), ci, t.get("accuracy"), t.get("logit_diff_recovered"),
                         lm.get("ce_loss"), lm.get("ce_loss_delta"), lm.get("ce_loss_score"), lm.get("kl_div"),
                         lm.get("kl_div_score")))
    return _table(head, rows, numeric_from=2)


def _reconstruction_table(runs: Sequence[Run]) -> str | None:
    rows = [(r.rid, name, hook, *(m.get(k) for k in _RECON_COLS))
            for r in runs for name, c in r.doc["conditions"].items()
            for hook, m in (c.get("reconstruction") or {}).items()]
    return _table(("run", "condition", "hook", *_RECON_COLS), rows, numeric_from=3) if rows else None


def _gaps_table(runs: Sequence[Run]) -> str | None:
    def span(g: Mapping[str, Any], metric: str) -> str | None:
        lo, hi = g.get(f"{metric}_lowest"), g.get(f"{metric}_highest")
        return None if lo is None or hi is None else f"{lo} → {hi}"

    rows = [(r.rid, cond, g.get("accuracy_gap"), span(g, "accuracy"), g.get("logit_diff_gap"), span(g, "logit_diff"))
            for r in runs for cond, g in ((r.doc.get("gaps") or {}).get("identity") or {}).items()]
    head = ("run", "condition", "accuracy gap", "lowest → highest", "logit diff gap", "lowest → highest")
    return _table(head, rows, numeric_from=2) if rows else None


def _task_section(page: _Page, task: str, runs: Sequence[Run]) -> None:
    slug = _slug(task)
    page.add(f'<section id="task-{slug}"><h2>Task: {html.escape(task)}</h2>'
             f"<p class=sub>{len(runs)} run(s): {html.escape(', '.join(r.rid for r in runs))}</p>")
    page.add("<h3>Logit difference</h3>")
    page.figure(charts.logit_diff_chart(runs, task), f"{slug}_logit_diff",
                "Mean logit(correct) − logit(incorrect) per condition (rows) and run (colours); error bars are 95% "
                "confidence intervals, hatched bars are ablation baselines.",
                "No run of this task reports a logit difference.")
    page.add("<h3>Fraction of logit difference recovered</h3>")
    page.figure(charts.recovered_chart(runs, task), f"{slug}_recovered",
                "(LD spliced − LD ablated) / (LD clean − LD ablated) per SAE condition: 1 means the SAE keeps all "
                "of the behaviour (dashed line), 0 means it does no better than ablating the hook.",
                "No condition of this task has a fraction recovered (it needs an ablation baseline and a logit diff).")
    page.add("<h3>CE loss delta against L0</h3>")
    page.figure(charts.frontier_chart(runs, task), f"{slug}_ce_vs_l0",
                "The sparsity/fidelity frontier: each point is one SAE condition of one run; x is its L0 (summed over "
                "its SAEs), y the increase in next-token cross-entropy when it is spliced in.",
                "No SAE condition of this task reports both L0 and a CE loss delta.")
    if charts.identity_slices(runs):
        page.add("<h3>Identity slices</h3>")
        page.figure(charts.identity_heatmap(runs, task), f"{slug}_identity_slices",
                    "Accuracy (top) and mean logit diff (bottom) on each identity's examples, per run and condition; "
                    "colour scales span the values shown, grey cells are missing.", "")
        gaps = _gaps_table(runs)
        if gaps:
            page.add("<p class=sub>Spread across identities (highest − lowest):</p>" + gaps)
    page.add("<h3>Conditions</h3>" + _conditions_table(runs))
    recon = _reconstruction_table(runs)
    page.add("<h3>Reconstruction</h3>" + (recon or "<p class=note>No condition of this task splices an SAE.</p>"))
    page.add("</section>")


def load_runs(paths: Sequence[Path]) -> list[Run]:
    """Find, read, check and label every run under `paths`."""
    runs = [load_run(p) for p in find_results(paths)]
    label_runs(runs)
    return runs


def by_task(runs: Sequence[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.task, []).append(r)
    return out


def render(runs: Sequence[Run], files_dir: Path) -> str:
    """The whole HTML page; charts are also written as PNGs into `files_dir`."""
    files_dir.mkdir(parents=True, exist_ok=True)
    for old in files_dir.glob("*.png"):
        old.unlink()
    page = _Page(files_dir)
    groups = by_task(runs)
    for task, task_runs in groups.items():
        _task_section(page, task, task_runs)
    toc = "".join(f'<li><a href="#task-{_slug(t)}">{html.escape(t)}</a> ({len(rs)} runs)</li>'
                  for t, rs in groups.items())
    template = Template(files("saeeval").joinpath("report_template.html").read_text(encoding="utf-8"))
    return template.substitute(
        title=html.escape(f"saeeval comparison: {', '.join(groups)}"),
        meta=html.escape(f"{len(runs)} runs · generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
                         f"by saeeval {saeeval.__version__}"),
        toc=toc, summary=_summary(runs), body="\n".join(page.parts), n_images=page.n_images,
    )


def build_report(paths: list[Path], out: Path) -> Path:
    """Write the comparison page `out` (and its PNGs in `<out stem>_files/`) for every run under `paths`."""
    return _write(load_runs(paths), Path(out))


def _write(runs: Sequence[Run], out: Path) -> Path:
    atomic_write_text(out, render(runs, out.parent / f"{out.stem}_files"))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m saeeval.report",
        description="Compare finished saeeval runs in one self-contained HTML page (and optionally a wandb report).",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, multirun folders or results.json files")
    parser.add_argument("--out", type=Path, default=Path("report.html"),
                        help="HTML file to write; its PNGs go to <stem>_files/ (default: %(default)s)")
    parser.add_argument("--wandb-report", metavar="ENTITY/PROJECT",
                        help="also publish the comparison as a wandb report (needs wandb login and network)")
    args = parser.parse_args(argv)
    try:
        if args.wandb_report:
            from saeeval.report_wandb import parse_target, publish_wandb_report

            parse_target(args.wandb_report)
        runs = load_runs(args.paths)
        print(f"saeeval: report written to {_write(runs, args.out)}")
        if args.wandb_report:
            print(f"saeeval: wandb report saved to {publish_wandb_report(runs, args.wandb_report)}")
    except SaeevalError as err:
        print_error(err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
