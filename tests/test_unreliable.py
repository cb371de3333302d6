"""Ill-conditioned ratios: the rule on hand-computed cases, the standard errors it reads, and how results.json,
the terminal table and the HTML report mark a flagged value."""

from __future__ import annotations

import io
import math
from html import escape

import pytest
import torch
from rich.console import Console

from saeeval.api.results import Results
from saeeval.engine.computed import Computed
from saeeval.engine.conditions import Condition
from saeeval.metrics.lm_loss import KLDivergence, PairedCEDifference
from saeeval.metrics.stats import UNRELIABLE_Z, ill_conditioned
from saeeval.publish.html_report import _conditions_table
from saeeval.publish.runs import Run
from saeeval.render.catalog import UNRELIABLE_LEGEND, cell, metric
from saeeval.render.table import results_tables
from saeeval.results.document import conditions_entry


def test_the_threshold_is_half_the_denominator_at_95_percent() -> None:
    assert UNRELIABLE_Z == pytest.approx(1.959963984540054 / 0.5)
    assert ill_conditioned(0.0366, 0.0165)  # 2.2 standard errors: 95% CI ±88% of the effect
    assert ill_conditioned(-0.0366, 0.0165)
    assert not ill_conditioned(-1.6907, 0.0498)  # 34 standard errors
    assert not ill_conditioned(3.93, 1.0) and ill_conditioned(3.91, 1.0)
    assert ill_conditioned(0.5, None)  # fewer than 2 examples: no standard error, nothing to rely on
    assert not ill_conditioned(None, 0.1)  # no denominator: the ratio itself is null


def test_standard_errors_of_kl_and_paired_ce_difference_by_hand() -> None:
    kl = KLDivergence()
    kl.add(torch.tensor([1.0, 2.0]))
    kl.add(torch.tensor([3.0, 4.0]))
    assert float(kl.compute()) == pytest.approx(2.5)
    assert float(kl.stderr()) == pytest.approx(math.sqrt(5 / 3) / 2)  # s² = 5/3 (ddof 1), n = 4
    delta = PairedCEDifference()
    delta.add(torch.tensor([0.5, 0.0, -0.5]), 2)  # a chunk whose middle row is no CE position (value 0, uncounted)
    assert float(delta.compute()) == pytest.approx(0.0)
    assert float(delta.stderr()) == pytest.approx(math.sqrt(0.5 / 2))  # s² = (0.25 + 0.25) / 1
    single = PairedCEDifference()
    single.add(torch.tensor([0.3]))
    assert math.isnan(float(single.stderr()))


def _computed(name, cond, ce, kl, ld, dld=None, dld_se=None, ce_se=None, kl_se=None) -> Computed:
    task = {"logit_diff": ld}
    if dld is not None:
        task |= {"delta_logit_diff": dld, "delta_logit_diff_stderr": dld_se}
    return Computed(
        name=name,
        condition=cond,
        ce=ce,
        kl=kl,
        task=task,
        groups=None,
        recon={},
        samples=None,
        kl_stderr=kl_se,
        ce_delta_stderr=ce_se,
    )


def _doc(base_dld: float, base_dld_se: float) -> dict:
    """Clean LD 10, CE 1.0; the SAE at LD 9.5, CE 1.01, KL 0.01; its zero ablation with the given paired ΔLD,
    CE 1.5 ± 0.01 (50 s.e. from clean) and KL 0.0004 ± 0.0002 (2 s.e. from 0)."""
    sae = Condition("sae", ("sae",), ("h",), None, "zero_ablation@h")
    abl = Condition("zero_ablation@h", (), ("h",), "zero")
    computed = [
        _computed("clean", None, 1.0, None, 10.0),
        _computed("sae", sae, 1.01, 0.01, 9.5, -0.5, 0.05, 0.001, 0.001),
        _computed("zero_ablation@h", abl, 1.5, 0.0004, 10.0 + base_dld, base_dld, base_dld_se, 0.01, 0.0002),
    ]
    conds = conditions_entry(computed, has_answers=True)
    return {"conditions": conds, "task": {"name": "t", "n_examples": 8}, "model": {"name": "m"}}


def test_results_list_exactly_the_ill_conditioned_scores() -> None:
    conds = _doc(-0.6, 0.3)["conditions"]  # ΔLD 2 s.e. from 0
    sae = conds["sae"]
    assert sae["task"]["logit_diff_recovered"] == pytest.approx((9.5 - 9.4) / (10 - 9.4))
    assert sae["lm"]["ce_loss_score"] == pytest.approx((1.5 - 1.01) / 0.5)
    assert sae["lm"]["kl_div_score"] == pytest.approx((0.0004 - 0.01) / 0.0004)
    assert sae["unreliable"] == ["logit_diff_recovered", "kl_div_score"]
    assert conds["zero_ablation@h"]["lm"]["kl_div_stderr"] == pytest.approx(0.0002)
    assert "unreliable" not in conds["zero_ablation@h"] and "unreliable" not in conds["clean"]
    assert _doc(-5.0, 0.3)["conditions"]["sae"]["unreliable"] == ["kl_div_score"]  # ΔLD 17 s.e.: reliable
    frame = Results(_doc(-0.6, 0.3)).to_pandas()
    assert frame.loc["sae", "unreliable"] == ["logit_diff_recovered", "kl_div_score"]


def test_table_and_report_mark_flagged_values_and_explain_the_mark(tmp_path) -> None:
    doc = _doc(-0.6, 0.3)
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(results_tables(doc, 200))
    text = out.getvalue()
    sae_rows = [line.split() for line in text.splitlines() if line.split()[:1] == ["sae"]]
    cells = [c for row in sae_rows for c in row]
    assert "0.167?" in cells and "-24.000?" in cells  # recovered and KL score flagged
    assert "0.980" in cells and "0.980?" not in cells  # the CE score is well-conditioned
    assert UNRELIABLE_LEGEND in text
    html = _conditions_table([Run(path=tmp_path, doc=doc, rid="r1")])
    assert "0.1667?</td>" in html and escape(UNRELIABLE_LEGEND) in html
    assert cell(metric("ce_loss_score"), doc["conditions"]["sae"]["lm"], doc["conditions"]["sae"]) == "0.980"
    reliable = _doc(-5.0, 0.3)
    reliable["conditions"]["sae"]["unreliable"] = []
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(results_tables(reliable, 200))
    assert "?" not in out.getvalue()


def test_recovered_chart_fades_and_marks_the_unreliable_bar(tmp_path) -> None:
    from saeeval.render.charts import recovered_chart

    run = Run(path=tmp_path, doc=_doc(-0.6, 0.3), rid="r1", color="#1f77b4")
    fig = recovered_chart([run], "t")
    ax = fig.axes[0]
    assert [t.get_text().strip() for t in ax.texts] == ["?"]
    assert "unreliable" in ax.get_xlabel()
    (bar,) = ax.patches
    assert bar.get_alpha() == pytest.approx(0.4)
    reliable = _doc(-5.0, 0.3)
    reliable["conditions"]["sae"]["unreliable"] = []
    ax = recovered_chart([Run(path=tmp_path, doc=reliable, rid="r1", color="#1f77b4")], "t").axes[0]
    assert not ax.texts and "unreliable" not in ax.get_xlabel()
