"""The terminal summary: a task table, a generated-answers table (task.answer_mode generate/both) and an
LM-damage/reconstruction table, fitted to the terminal's width.

Columns come from saeeval.render.catalog; when the page is narrow the least important ones are left out (named in
the caption) rather than squeezed into '…', so every number shown is readable at 80, 100 or 120 columns.
A group condition's reconstruction numbers are shown per hook, on labelled rows under the condition.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from saeeval.render.catalog import UNRELIABLE_LEGEND, Metric, any_flagged, cell, fmt, metrics, present, short_name

WIDE = 200  # page width when stdout is not a terminal and COLUMNS is unset (logs, CI)
_SUB = "  └ "
_MEASURE = 100_000


def _fit(build: Any, decls: Sequence[Metric], width: int) -> Table:
    """The table with as many columns as fit in `width`: drop the highest-priority-number columns first."""
    shown = list(decls)
    unbounded = Console(width=_MEASURE)  # a measurement is capped at the console's width: measure unbounded
    while True:
        table = build(shown, [m for m in decls if m not in shown])
        droppable = [m for m in shown if m.priority > 0]
        if unbounded.measure(table).maximum <= width or not droppable:
            return table
        worst = max(droppable, key=lambda m: (m.priority, shown.index(m)))
        shown.remove(worst)


def _new_table(title: str, hidden: Sequence[Metric], width: int) -> Table:
    caption = f"not shown at {width} columns: {', '.join(m.short for m in hidden)}" if hidden else None
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("condition", overflow="fold")
    return table


def _per_condition(
    title: str,
    conds: Mapping[str, Mapping[str, Any]],
    decls: Sequence[Metric],
    width: int,
    cell_of: Callable[[Metric, Mapping[str, Any]], str],
) -> Table:
    """One row per condition, one column per metric (`cell_of(metric, condition)`), fitted to `width`."""

    def build(shown: Sequence[Metric], hidden: Sequence[Metric]) -> Table:
        table = _new_table(title, hidden, width)
        for m in shown:
            table.add_column(m.short, justify="right", no_wrap=True)
        for name, c in conds.items():
            table.add_row(short_name(name), *(cell_of(m, c) for m in shown))
        return table

    return _fit(build, decls, width)


def task_table(doc: Mapping[str, Any], width: int) -> Table | None:
    """Conditions × logit diff, 95% CI, accuracy, recovered, paired ΔLD; None when the task has no answers."""
    conds = doc["conditions"]
    decls = present(metrics("task"), [c.get("task") or {} for c in conds.values()])
    if not decls:
        return None
    t = doc["task"]
    title = f"saeeval · {t['name']} · {doc['model'].get('name')} · {t.get('n_examples')} examples"

    return _per_condition(title, conds, decls, width, lambda m, c: cell(m, c.get("task") or {}, c))


def generation_table(doc: Mapping[str, Any], width: int) -> Table | None:
    """Conditions × accuracy of the generated answers, unparsed rate, agreement with the logit-difference label;
    None when the run did not generate."""
    conds = doc["conditions"]
    decls = present(metrics("generation"), [c.get("generation") or {} for c in conds.values()])
    if not decls:
        return None
    opts = (doc.get("task") or {}).get("options") or {}
    title = f"generated answers · {opts.get('max_new_tokens')} new tokens, greedy"

    return _per_condition(title, conds, decls, width, lambda m, c: fmt(m.value(c.get("generation") or {}), m.spec))


def lm_table(doc: Mapping[str, Any], width: int) -> Table:
    """Conditions × CE/KL damage and reconstruction; a group's SAEs get one labelled row per hook."""
    conds = doc["conditions"]
    lm_decls = present(metrics("lm"), [c.get("lm") or {} for c in conds.values()])
    recons = [r for c in conds.values() for r in (c.get("reconstruction") or {}).values()]
    rc_decls = present(metrics("reconstruction"), recons)
    title = "LM damage and reconstruction" + (f" · {doc['task']['name']}" if "task" in doc else "")

    def build(shown: Sequence[Metric], hidden: Sequence[Metric]) -> Table:
        table = _new_table(title, hidden, width)
        for m in shown:
            table.add_column(m.short, justify="right", no_wrap=True)
        for name, c in conds.items():
            lm, recon = c.get("lm") or {}, c.get("reconstruction") or {}
            single = next(iter(recon.values())) if len(recon) == 1 else None
            table.add_row(short_name(name), *(_lm_cell(m, c, lm, single) for m in shown))
            if len(recon) > 1:
                for hook, r in recon.items():
                    table.add_row(
                        _SUB + short_name(hook),
                        *(fmt(m.value(r), m.spec) if m.section == "reconstruction" else "" for m in shown),
                    )
        return table

    return _fit(build, [*lm_decls, *rc_decls], width)


def _lm_cell(m: Metric, cond: Mapping[str, Any], lm: Mapping[str, Any], recon: Mapping[str, Any] | None) -> str:
    """An LM cell from the condition's `lm`; a reconstruction cell from its only SAE (blank for groups)."""
    if m.section == "lm":
        return cell(m, lm, cond)
    return "" if recon is None else fmt(m.value(recon), m.spec)


def results_tables(doc: Mapping[str, Any], width: int) -> Group:
    """The tables for a page `width` columns wide (answer_mode=generate: the generated answers instead of the
    logit-difference table)."""
    generate_only = ((doc.get("task") or {}).get("options") or {}).get("answer_mode") == "generate"
    task = None if generate_only else task_table(doc, width)
    tables: list[Any] = [t for t in (task, generation_table(doc, width), lm_table(doc, width)) if t is not None]
    if any_flagged(doc["conditions"]):
        tables.append(Text(UNRELIABLE_LEGEND, style="dim"))
    return Group(*tables)


def page_width(console: Console) -> int:
    """The terminal's width (rich reads COLUMNS when set); a wide page when output is not a terminal."""
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return console.width
    return WIDE


def print_results(doc: Mapping[str, Any], console: Console | None = None) -> None:
    """Print the results tables, fitted to the page."""
    console = console or Console()
    width = page_width(console)
    if width != console.width:
        console = Console(width=width, file=console.file)
    console.print(results_tables(doc, width))
