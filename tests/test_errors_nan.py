"""Non-finite numbers: weights holding NaN/Inf are refused at load with one line naming the tensor; outputs that
become NaN/Inf during a run (finite weights that overflow, float16 activations) name the condition and the site,
are marked "nan" in results.json (null stays "not applicable"), and the run exits 2 after writing its files."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from cli_harness import digest, run_inprocess, with_prior_results
from safetensors.torch import load_file, save_file

from saeeval.api.results import Results
from saeeval.loading.models import load_model
from saeeval.loading.zoo import default_zoo_root
from saeeval.publish.html_report import build_report

ZOO = default_zoo_root() / "tiny"


def poison(file: Path, key: str, values: list[float]) -> None:
    """Overwrite the first entries of tensor `key` in a safetensors file with `values`."""
    tensors = load_file(str(file))
    flat = tensors[key].flatten().clone()
    flat[: len(values)] = torch.tensor(values)
    tensors[key] = flat.reshape(tensors[key].shape).contiguous()
    save_file(tensors, str(file))


@pytest.mark.parametrize(
    ("key", "values", "needle"),
    [
        ("W_enc", [float("nan")], "W_enc holds 1 NaN and 0 Inf of 32768 values"),
        ("b_dec", [float("inf"), -float("inf")], "b_dec holds 0 NaN and 2 Inf of 64 values"),
    ],
)
def test_sae_with_non_finite_weights_is_refused_at_load(tmp_path, capfd, key, values, needle):
    folder = tmp_path / "nan_sae"
    shutil.copytree(ZOO / "saes" / "blocks.0.hook_resid_post", folder)
    poison(folder / "sae_weights.safetensors", key, values)
    out = tmp_path / "out"
    before = with_prior_results(out)
    outcome = run_inprocess("+task=ioi", "saes=folder", f"saes.paths=[{folder}]", "force=true", out=out, capfd=capfd)
    outcome.assert_one_line_error("SAE 'nan_sae' at hook 'blocks.0.hook_resid_post' has non-finite weights", needle)
    assert digest(out) == before


def test_model_with_non_finite_weights_is_refused_at_load(tmp_path, capfd):
    folder = tmp_path / "nan_model"
    shutil.copytree(ZOO / "model", folder / "model")
    poison(folder / "model" / "model.safetensors", "blocks.0.attn.W_Q", [float("nan")] * 3)
    out = tmp_path / "out"
    before = with_prior_results(out)
    outcome = run_inprocess("+task=ioi", f"model.name={folder / 'model'}", "force=true", out=out, capfd=capfd)
    outcome.assert_one_line_error("model", "has non-finite weights: blocks.0.attn.W_Q holds 3 NaN and 0 Inf")
    assert digest(out) == before


# --- outputs that become non-finite during the run (finite weights) -------------------------------------------


def overflowing_sae(folder: Path, hook: str = "blocks.0.hook_resid_post") -> Path:
    """A copy of a zoo SAE whose weights are finite but whose encoder overflows float32 on large inputs: one
    feature's encoder column scaled to norm 1e38, so (x − b_dec)·w ≥ 3.4 gives an infinite pre-activation."""
    shutil.copytree(ZOO / "saes" / hook, folder)
    tensors = load_file(str(folder / "sae_weights.safetensors"))
    w = tensors["W_enc"].clone()
    w[:, 0] = w[:, 0] / w[:, 0].norm() * 1e38
    tensors["W_enc"] = w.contiguous()
    assert all(bool(t.isfinite().all()) for t in tensors.values())
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    return folder


def read_doc(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def numbers(section: dict) -> list:
    return [v for k, v in section.items() if k not in ("n", "n_tokens")]


def test_overflowing_sae_names_condition_and_site_and_marks_nan(tmp_path, capfd):
    sae = overflowing_sae(tmp_path / "hot")
    earlier = tmp_path / "earlier"
    before = with_prior_results(earlier)
    out = tmp_path / "out"
    outcome = run_inprocess("+task=ioi", "saes=folder", f"saes.paths=[{sae}]", "plot=true", out=out, capfd=capfd)
    line = outcome.assert_one_line_error(
        "condition 'hot' became non-finite at SAE reconstruction at blocks.0.hook_resid_post",
        'marked "nan"',
        str(out / "results.json"),
        "W_enc",
    )
    assert "positions" in line
    assert digest(earlier) == before
    doc = read_doc(out)  # written before the error: nothing is lost
    hot = doc["conditions"]["hot"]
    assert hot["non_finite"]["SAE reconstruction at blocks.0.hook_resid_post"] > 0
    assert hot["lm"]["ce_loss"] == "nan" and hot["lm"]["kl_div"] == "nan" and hot["lm"]["ce_loss_score"] == "nan"
    assert hot["task"]["logit_diff"] == "nan" and hot["task"]["accuracy"] == "nan"
    assert hot["reconstruction"]["blocks.0.hook_resid_post"]["mse"] == "nan"
    clean = doc["conditions"]["clean"]
    assert "non_finite" not in clean and all(isinstance(v, float) for v in numbers(clean["task"]))
    zero = doc["conditions"][hot["baseline"]]  # the ablation at the same hook is untouched by the SAE
    assert "non_finite" not in zero and isinstance(zero["lm"]["ce_loss"], float)
    assert "NaN" in outcome.stdout and (out / "logit_diff.png").is_file()
    samples = [json.loads(s) for s in (out / "samples.jsonl").read_text().splitlines()]
    hot_lds = [s["logit_diff"]["hot"] for s in samples]
    assert "nan" in hot_lds and all(v == "nan" or isinstance(v, float) for v in hot_lds)
    assert all(isinstance(s["logit_diff"]["clean"], float) for s in samples)
    frame = Results.load(out).to_pandas()  # the mark is float NaN for pandas
    assert math.isnan(frame.loc["hot", "lm/ce_loss"]) and frame.loc["clean", "lm/ce_loss"] > 0
    page = build_report([out], tmp_path / "report.html").read_text()
    assert ">NaN</td>" in page and ">—</td>" in page


def test_only_the_overflowing_condition_is_nan(tmp_path, capfd):
    hot = overflowing_sae(tmp_path / "hot")
    good = tmp_path / "good"
    shutil.copytree(ZOO / "saes" / "blocks.1.hook_resid_post", good)
    out = tmp_path / "out"
    outcome = run_inprocess(
        "+task=toxicity", "limit=64", "saes=folder", f"saes.paths=[{good},{hot}]", "plot=false", out=out, capfd=capfd
    )
    line = outcome.assert_one_line_error("condition 'hot' became non-finite")
    assert "also in" not in line  # the only one
    conds = read_doc(out)["conditions"]
    assert [n for n, c in conds.items() if "non_finite" in c] == ["hot"]
    for name in ("clean", "good"):
        c = conds[name]
        values = numbers(c["task"]) + numbers(c["lm"]) + numbers(next(iter(c.get("reconstruction", {"": {}}).values())))
        assert values and all(isinstance(v, float) or v is None for v in values), (name, values)
        assert "nan" not in values
    assert isinstance(conds["good"]["reconstruction"]["blocks.1.hook_resid_post"]["mse"], float)
    doc = read_doc(out)
    hot_slices = [s["hot"]["accuracy"] for s in doc["slices"].values()]
    assert "nan" in hot_slices
    assert all(isinstance(s["good"]["accuracy"], float) for s in doc["slices"].values())


def overflowing_model(folder: Path, key: str, scale: float) -> Path:
    """A copy of the zoo model with weight `key` scaled by `scale`: still finite in float16 (|w| ≲ 1e4), harmless
    in float32, but its products exceed float16's 65504 (an MLP output, or the logits)."""
    shutil.copytree(ZOO / "model", folder)
    tensors = load_file(str(folder / "model.safetensors"))
    tensors[key] = (tensors[key] * scale).contiguous()
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize(("key", "scale", "site"), [("blocks.1.mlp.W_out", 2e4, "final residual stream")])
def test_float16_overflow_in_the_model_names_clean(tmp_path, capfd, key, scale, site):
    model = overflowing_model(tmp_path / "hot_model", key, scale)
    fine = run_inprocess(
        "+task=ioi", f"model.name={model}", "limit=16", "plot=false", out=tmp_path / "f32", capfd=capfd
    )
    assert fine.code == 0, fine.stderr  # float32: the same weights stay finite
    assert "non_finite" not in json.dumps(read_doc(tmp_path / "f32"))
    out = tmp_path / "f16"
    outcome = run_inprocess(
        "+task=ioi", f"model.name={model}", "dtype=float16", "limit=16", "plot=false", out=out, capfd=capfd
    )
    outcome.assert_one_line_error(f"condition 'clean' became non-finite at {site}", "run it in float32 (dtype=float32)")
    clean = read_doc(out)["conditions"]["clean"]
    assert clean["lm"]["ce_loss"] == "nan" and clean["non_finite"][site] > 0


def test_float16_logits_beyond_its_range_stay_finite_because_logits_are_float32(tmp_path, capfd):
    """W_U × 1e4 is still finite in float16 and so is the residual, but the logits pass float16's 65504: they are
    computed in float32 (saeeval.engine.unembed), so the run completes with finite CE, KL and logit differences."""
    model = overflowing_model(tmp_path / "hot_model", "unembed.W_U", 1e4)
    half = load_model(str(model), device="cpu", dtype="float16")
    with torch.no_grad():  # TransformerLens's own float16 unembedding overflows on these weights
        assert half(torch.tensor([[1, 5, 9, 20, 33]])).isinf().any()
    out = tmp_path / "f16"
    outcome = run_inprocess(
        "+task=ioi", f"model.name={model}", "dtype=float16", "limit=16", "plot=false", out=out, capfd=capfd
    )
    assert outcome.code == 0, outcome.stderr
    conds = read_doc(out)["conditions"]
    assert abs(conds["clean"]["task"]["logit_diff"]) > 655  # logits of this size exceed float16's range
    for name, cond in conds.items():
        assert "non_finite" not in cond, name
        assert math.isfinite(cond["lm"]["ce_loss"]) and math.isfinite(cond["task"]["logit_diff"]), name
