"""Non-finite numbers: weights holding NaN/Inf are refused at load with one line naming the tensor."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cli_harness import digest, run_inprocess, with_prior_results
from saeeval.models import default_zoo_root

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
