"""The metric catalogue: one declaration makes a metric computed by its metric file show in every output."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console
from test_api import plain_model, plain_saes

import saeeval
from saeeval.metrics.reconstruction import Reconstruction
from saeeval.publish.html_report import build_report
from saeeval.publish.loggers import flat_metrics
from saeeval.publish.runs import load_runs
from saeeval.publish.wandb_report import _recon_md
from saeeval.render import catalog
from saeeval.render.catalog import Metric, fmt, short_name

HOOK = "blocks.0.hook_resid_post"


def test_short_names_abbreviate_hooks_and_baselines_the_same_way() -> None:
    assert short_name("blocks.1.attn.hook_z") == "L1.attn.z"
    assert short_name("zero_ablation@blocks.0.hook_resid_post+blocks.1.hook_mlp_out") == "zero@L0.resid_post+L1.mlp_out"
    assert short_name("mean_ablation@blocks.10.hook_resid_pre") == "mean@L10.resid_pre"
    assert short_name("my_sae_folder") == "my_sae_folder"


def test_fmt_is_the_one_number_format() -> None:
    assert [fmt(None), fmt(0.123456), fmt(0.123456, ".2f"), fmt(7), fmt("african")] == [
        "—",
        "0.1235",
        "0.12",
        "7",
        "african",
    ]


@pytest.mark.slow
def test_a_metric_from_its_metric_file_and_one_declaration_shows_in_every_output(monkeypatch, tmp_path) -> None:
    computed = Reconstruction.compute
    monkeypatch.setattr(Reconstruction, "compute", lambda self: {**computed(self), "peak_ratio": torch.tensor(0.4321)})
    declared = Metric("peak_ratio", "reconstruction", "peak ratio", "PEAK", ".4f", priority=0)
    monkeypatch.setattr(catalog, "METRICS", [*catalog.METRICS, declared])

    r = saeeval.evaluate(plain_model(), [s for s in plain_saes() if s.cfg.metadata.hook_name == HOOK], "ioi", limit=8)
    value = r.conditions[HOOK]["reconstruction"][HOOK]["peak_ratio"]
    assert value == pytest.approx(0.4321)  # the results document

    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(r.table(80))
    assert "PEAK" in out.getvalue().split() and fmt(value, ".4f") in out.getvalue().split()  # terminal table

    assert r.to_pandas().loc[HOOK, f"reconstruction/{HOOK}/peak_ratio"] == value  # pandas

    r.save(tmp_path / "run")
    page = build_report([tmp_path / "run"], tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<th class=num>peak ratio</th>" in page and f"<td class=num>{fmt(value)}</td>" in page  # HTML report

    assert flat_metrics(r.document)[f"{HOOK}/reconstruction/{HOOK}/peak_ratio"] == value  # wandb / CSV metrics
    md = _recon_md(load_runs([tmp_path / "run"]))
    assert "| peak ratio |" in md and fmt(value) in md  # wandb report
