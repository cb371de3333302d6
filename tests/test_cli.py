"""End-to-end: `python -m saeeval` as a user runs it, output files parsed and checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from saeeval.metrics.stats import UNRELIABLE_Z
from saeeval.render.catalog import UNRELIABLE_LEGEND, fmt

pytestmark = pytest.mark.slow


def run_cli(*overrides: str, out: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "saeeval", *overrides, f"hydra.run.dir={out}"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("saeeval: error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def toxicity_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("toxicity")
    proc = run_cli("+task=toxicity", out=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_toxicity_default_run_writes_results_with_clean_accuracy_and_sae_damage(toxicity_run):
    out, proc = toxicity_run
    doc = json.loads((out / "results.json").read_text())
    assert doc["schema_version"] == 1 and len(doc["config_hash"]) == 16
    assert doc["task"]["name"] == "toxicity" and doc["model"]["name"] == "tiny"
    assert set(doc["versions"]) >= {"torch", "transformer_lens", "sae_lens", "lightning", "torchmetrics"}
    conds = doc["conditions"]
    clean = conds["clean"]
    assert clean["task"]["accuracy"] >= 0.95
    assert clean["task"]["logit_diff_ci_low"] < clean["task"]["logit_diff"] < clean["task"]["logit_diff_ci_high"]
    spliced = {n: c for n, c in conds.items() if n != "clean" and c["ablation"] is None}
    ablated = {n: c for n, c in conds.items() if c.get("ablation") == "zero"}
    assert len(spliced) == 4 and len(ablated) == 4
    for name, c in spliced.items():
        assert c["lm"]["kl_div"] > 0 and c["baseline"] in ablated
        ((hook, recon),) = c["reconstruction"].items()
        assert hook == name and 0 < recon["explained_variance"] <= 1 and recon["l0"] > 0
        assert c["lm"]["kl_div"] < conds[c["baseline"]]["lm"]["kl_div"]  # an SAE beats zeroing its activation
        assert c["task"]["logit_diff_recovered"] is not None
    # the SAEs damage the model: some spliced condition loses logit difference against clean
    assert min(c["task"]["logit_diff"] for c in spliced.values()) < clean["task"]["logit_diff"]
    assert set(doc["slices"]) >= {"identity=african", "identity=straight", "identity=paralyzed", "label=toxic"}
    assert "false_positive_rate" in doc["slices"]["identity=african"]["clean"]
    assert "identity" in doc["gaps"]


def test_toxicity_flags_the_ill_conditioned_recovered_of_l1_attn_z_and_nothing_else(toxicity_run):
    """Zero-ablating L1.attn.z moves the logit difference by ~0.04 ± 0.017: its recovered share (−0.55) is
    flagged in results.json and the table; the other SAEs' baselines move it by many standard errors."""
    out, proc = toxicity_run
    conds = json.loads((out / "results.json").read_text())["conditions"]
    base = conds["zero_ablation@blocks.1.attn.hook_z"]["task"]
    assert abs(base["delta_logit_diff"]) < UNRELIABLE_Z * base["delta_logit_diff_stderr"]
    assert conds["blocks.1.attn.hook_z"]["unreliable"] == ["logit_diff_recovered"]
    for name in ("blocks.0.hook_resid_post", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"):
        assert conds[name]["unreliable"] == [], name
        assert conds[name]["task"]["logit_diff_recovered"] is not None
    recovered = fmt(conds["blocks.1.attn.hook_z"]["task"]["logit_diff_recovered"], ".3f")
    row = next(line for line in proc.stdout.splitlines() if line.split()[:1] == ["L1.attn.z"])
    assert f"{recovered}?" in row.split()
    assert UNRELIABLE_LEGEND in proc.stdout.replace("\n", " ")


def test_toxicity_samples_are_complete_and_ordered(toxicity_run):
    out, _ = toxicity_run
    doc = json.loads((out / "results.json").read_text())
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == doc["task"]["n_examples"]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert set(rows[0]["logit_diff"]) == set(doc["conditions"])
    mean_clean = sum(r["logit_diff"]["clean"] for r in rows) / len(rows)
    assert mean_clean == pytest.approx(doc["conditions"]["clean"]["task"]["logit_diff"], rel=1e-6)
    assert (out / "logit_diff.png").stat().st_size > 1000


def test_rerun_of_finished_config_is_skipped(toxicity_run):
    out, _ = toxicity_run
    before = (out / "results.json").stat().st_mtime_ns
    proc = run_cli("+task=toxicity", out=out)
    assert proc.returncode == 0 and "skipped" in proc.stdout
    assert (out / "results.json").stat().st_mtime_ns == before


def test_ioi_default_run(tmp_path):
    proc = run_cli("+task=ioi", out=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["conditions"]["clean"]["task"]["accuracy"] >= 0.95
    assert set(doc["slices"]) == {"order=ABBA", "order=BABA"}


def test_no_task_is_one_clear_error(tmp_path):
    assert_one_line_error(run_cli(out=tmp_path), "no task chosen", "+task=toxicity")


def test_sae_hook_not_in_model_is_one_clear_error(tmp_path):
    proc = run_cli("+task=ioi", "saes.hooks=[blocks.7.hook_resid_post]", out=tmp_path)
    assert_one_line_error(proc, "blocks.7.hook_resid_post")
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["+task=foo"], ["unknown task 'foo'", "toxicity"]),
        (["+task=ioi", "model.name=nonexistent"], ["unknown model 'nonexistent'"]),
        (["+task=toxicity", "mask=positions", "mask.positions=[FOO]"], ["'FOO'", "answer"]),
        (["+task=toxicity", "task.labels.toxic=two words"], ["not a single token", "task.labels"]),
        (["+task=ioi", "limit=0"], ["limit=0"]),
    ],
)
def test_bad_input_is_one_clear_error_line(tmp_path, overrides, needles):
    proc = run_cli(*overrides, out=tmp_path)
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_is_the_tools_own_page_with_every_group_and_choice(flag):
    """Not Hydra's "__main__ is powered by Hydra." and a config dump: the tool, its commands, its choices."""
    from saeeval.api.config_tree import GROUPS, group_options

    proc = subprocess.run([sys.executable, "-m", "saeeval", flag], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    out = proc.stdout
    assert out.startswith("saeeval: ") and "powered by Hydra" not in out and "_target_" not in out
    assert "python -m saeeval.report" in out and "--cfg job" in out and "docs/" in out
    rows = {
        line.split()[0]: line.split(None, 1)[1]
        for line in out.splitlines()
        if line.startswith("  ") and line.split()[0] in GROUPS
    }
    assert set(rows) == set(GROUPS)
    for group in GROUPS:
        assert rows[group].split(", ") == group_options(group)
