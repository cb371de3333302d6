"""The terminal tables on a real run's results.json: readable at 80, 100 and 120 columns, and COLUMNS honoured."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from saeeval.render.catalog import fmt, metric, short_name
from saeeval.render.table import WIDE, print_results, results_tables

GROUP = "blocks.0.hook_resid_post+blocks.1.hook_resid_post"


def render(doc: dict, width: int) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(results_tables(doc, width))
    return out.getvalue().splitlines()


@pytest.fixture(scope="module")
def doc(real_runs: dict[str, Path]) -> dict:
    return json.loads((real_runs["toxicity"] / "results.json").read_text())


@pytest.mark.parametrize("width", [80, 100, 120])
def test_every_number_is_readable_at_the_width(doc: dict, width: int) -> None:
    lines = render(doc, width)
    assert max(len(line) for line in lines) <= width
    text = "\n".join(lines)
    assert "…" not in text
    for name, c in doc["conditions"].items():
        short = short_name(name)
        # one row in each table, the name whole (never folded), its logit diff and CE delta readable in it
        task_row, lm_row = [line for line in lines if line.split()[:1] == [short]]
        assert fmt(c["task"]["logit_diff"], metric("logit_diff").spec) in task_row.split()
        if name != "clean":
            assert fmt(c["lm"]["ce_loss_delta"], metric("ce_loss_delta").spec) in lm_row.split()


@pytest.mark.parametrize("width", [80, 100, 120])
def test_a_group_shows_each_hooks_reconstruction_on_a_labelled_row(doc: dict, width: int) -> None:
    lines = render(doc, width)
    for hook, r in doc["conditions"][GROUP]["reconstruction"].items():
        (row,) = [line for line in lines if line.strip().startswith(f"└ {short_name(hook)}")]
        assert row.split()[2:4] == [fmt(r["explained_variance"], ".3f"), fmt(r["l0"], ".1f")]


def test_narrow_pages_drop_the_least_important_columns_and_say_so(doc: dict) -> None:
    def lm_header(width: int) -> list[str]:
        return next(line.split() for line in render(doc, width) if line.split()[:2] == ["condition", "CE"])

    narrow, wide = lm_header(80), lm_header(200)
    assert {"ΔCE", "EV", "L0"} <= set(narrow)  # priority 0: at every width
    assert "dead" in wide and "dead" not in narrow
    caption = next(line for line in render(doc, 80) if "not shown at 80 columns:" in line)
    assert set(wide) - set(narrow) == set(caption.split(":")[1].replace(",", " ").split())


@pytest.mark.parametrize(("columns", "expected"), [("80", 80), ("120", 120), (None, WIDE)])
def test_print_results_honours_columns_and_uses_a_wide_page_off_a_terminal(doc, monkeypatch, columns, expected):
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    out = io.StringIO()
    print_results(doc, Console(file=out, color_system=None))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= expected
    if expected == WIDE:
        assert max(len(line) for line in lines) > 120  # every column fits on the wide page
    assert ("not shown at 80 columns" in out.getvalue()) == (expected == 80)
