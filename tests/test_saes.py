"""load_saes / validate_saes: SAEs from the zoo, folders and releases splice exactly; misfits fail in one line."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from conftest import make_sae, make_tiny_model
from sae_lens import SAE

from saeeval.errors import SaeevalError
from saeeval.hooknames import sae_hook
from saeeval.loading.saes import load_saes, validate_saes

torch.set_num_threads(1)

TOKENS = torch.tensor([[0, 5, 17, 3, 42, 8, 60, 1], [9, 9, 2, 33, 14, 50, 7, 21]])


def save(sae: SAE, folder: Path) -> str:
    sae.save_model(folder)
    return str(folder)


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


@pytest.mark.parametrize(
    ("hook", "d_in", "arch"),
    [
        ("blocks.0.hook_resid_post", 32, "standard"),
        ("blocks.1.hook_resid_pre", 32, "topk"),
        ("blocks.0.hook_mlp_out", 32, "jumprelu"),
        ("blocks.1.mlp.hook_post", 128, "standard"),
        ("blocks.1.attn.hook_z", 32, "standard"),
    ],
)
def test_folder_sae_splices_exactly_like_a_hand_written_hook(tmp_path, hook, d_in, arch):
    model = make_tiny_model()
    reference = make_sae(hook, d_in, arch=arch, seed=3)
    saes = load_saes(model, source="folder", paths=[save(reference, tmp_path / "my_sae")])
    assert list(saes) == ["my_sae"] and sae_hook(saes["my_sae"]) == hook

    def splice(x: torch.Tensor, hook) -> torch.Tensor:  # noqa: ARG001 - TL hook signature
        return reference.decode(reference.encode(x))

    with torch.no_grad():
        spliced = model.run_with_saes(TOKENS, saes=[saes["my_sae"]])
        by_hand = model.run_with_hooks(TOKENS, fwd_hooks=[(hook, splice)])
        clean = model(TOKENS)
    assert torch.equal(spliced, by_hand)
    assert not torch.allclose(spliced, clean)  # the splice really changed the computation


def test_zoo_saes_are_keyed_by_hook_and_filtered_by_hooks(tmp_path):
    model = make_tiny_model()
    hooks = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]
    for i, hook in enumerate(hooks):
        save(make_sae(hook, 32, seed=i), tmp_path / "toy" / "saes" / hook)
    saes = load_saes(model, source="zoo", name="toy", zoo_root=tmp_path)
    assert list(saes) == hooks
    assert torch.equal(saes[hooks[1]].W_enc, make_sae(hooks[1], 32, seed=1).W_enc)
    only = load_saes(model, source="zoo", name="toy", hooks=[hooks[1]], zoo_root=tmp_path)
    assert list(only) == [hooks[1]]


def test_zoo_name_defaults_to_the_models_name(tmp_path):
    model = make_tiny_model()
    model.cfg.model_name = "toy"
    save(make_sae("blocks.0.hook_resid_post", 32), tmp_path / "toy" / "saes" / "blocks.0.hook_resid_post")
    assert list(load_saes(model, zoo_root=tmp_path)) == ["blocks.0.hook_resid_post"]


def test_two_saes_on_one_hook_get_distinct_keys(tmp_path):
    model = make_tiny_model()
    hook = "blocks.0.hook_resid_post"
    paths = [
        save(make_sae(hook, 32, seed=0), tmp_path / "a" / "sae"),
        save(make_sae(hook, 32, seed=1, arch="topk"), tmp_path / "b" / "sae"),
    ]
    saes = load_saes(model, source="folder", paths=paths)
    assert list(saes) == ["sae", "sae__2"]
    assert saes["sae__2"].cfg.architecture() == "topk"


def test_saes_are_moved_to_the_models_dtype(tmp_path):
    model = make_tiny_model().to(torch.float64)
    saes = load_saes(model, source="folder", paths=[save(make_sae("blocks.0.hook_resid_post", 32), tmp_path / "s")])
    assert saes["s"].W_enc.dtype == torch.float64 and saes["s"].dtype == torch.float64


def test_release_ids_expand_from_layers_and_are_checked_before_any_download(offline_hub):
    with pytest.raises(SaeevalError) as excinfo:
        load_saes(
            make_tiny_model(),
            source="release",
            release="gpt2-small-res-jb",
            layers=[0, 99],
            id_template="blocks.{layer}.hook_resid_pre",
        )
    msg = one_line_error(excinfo)
    assert "'blocks.99.hook_resid_pre'" in msg and "blocks.9.hook_resid_pre" in msg


def test_unknown_release_is_a_clear_error(offline_hub):
    with pytest.raises(SaeevalError) as excinfo:
        load_saes(make_tiny_model(), source="release", release="fake-release-xyz", sae_ids=["blocks.0.hook_z"])
    assert one_line_error(excinfo).startswith("unknown SAE release 'fake-release-xyz'")


def test_release_download_failure_offline_is_a_clear_error(offline_hub):
    with pytest.raises(SaeevalError) as excinfo:
        load_saes(
            make_tiny_model(),
            source="release",
            release="gpt2-small-res-jb",
            sae_ids=["blocks.0.hook_resid_pre"],
            check_processing=False,
        )
    msg = one_line_error(excinfo)
    assert "could not download SAE 'blocks.0.hook_resid_pre'" in msg and "saes=folder" in msg


def test_layers_without_id_template_is_a_clear_error():
    with pytest.raises(SaeevalError) as excinfo:
        load_saes(make_tiny_model(), source="release", release="gpt2-small-res-jb", layers=[0])
    assert "id_template" in one_line_error(excinfo)


def test_unknown_zoo_sae_hook_lists_the_available_hooks(tmp_path):
    save(make_sae("blocks.0.hook_resid_post", 32), tmp_path / "toy" / "saes" / "blocks.0.hook_resid_post")
    with pytest.raises(SaeevalError) as excinfo:
        load_saes(make_tiny_model(), name="toy", hooks=["blocks.7.hook_resid_post"], zoo_root=tmp_path)
    msg = one_line_error(excinfo)
    assert "'blocks.7.hook_resid_post'" in msg and "choose saes.hooks from blocks.0.hook_resid_post" in msg


def test_zoo_without_saes_is_a_clear_error(tmp_path):
    with pytest.raises(SaeevalError) as excinfo:
        load_saes(make_tiny_model(), name="nothing", zoo_root=tmp_path)
    assert "zoo model 'nothing' has no bundled SAEs" in one_line_error(excinfo)


def test_sae_with_a_wrong_hook_names_it_and_suggests_the_close_hook(tmp_path):
    path = save(make_sae("blocks.0.hook_resid_postt", 32), tmp_path / "typo")
    with pytest.raises(SaeevalError) as excinfo:
        load_saes(make_tiny_model(), source="folder", paths=[path])
    msg = one_line_error(excinfo)
    assert "SAE 'typo' hook 'blocks.0.hook_resid_postt'" in msg
    assert "did you mean blocks.0.hook_resid_post" in msg


def test_sae_with_a_wrong_d_in_is_a_clear_error():
    with pytest.raises(SaeevalError) as excinfo:
        validate_saes({"wide": make_sae("blocks.0.hook_resid_post", 48)}, make_tiny_model())
    msg = one_line_error(excinfo)
    assert "SAE 'wide' at hook 'blocks.0.hook_resid_post' has d_in=48" in msg and "width 32" in msg


def test_hook_z_sae_width_is_heads_times_d_head():
    model = make_tiny_model()
    validate_saes({"z": make_sae("blocks.0.attn.hook_z", 32)}, model)  # 4 heads x 8
    with pytest.raises(SaeevalError) as excinfo:
        validate_saes({"z8": make_sae("blocks.0.attn.hook_z", 8)}, model)
    assert "has d_in=8" in one_line_error(excinfo) and "width 32" in str(excinfo.value)


def test_sae_with_another_dtype_names_the_fix():
    sae = make_sae("blocks.0.hook_resid_post", 32).to(torch.float64)
    with pytest.raises(SaeevalError) as excinfo:
        validate_saes({"f64": sae}, make_tiny_model())
    msg = one_line_error(excinfo)
    assert "SAE 'f64' at hook 'blocks.0.hook_resid_post' is float64" in msg
    assert "sae.to(device='cpu', dtype=torch.float32)" in msg


def test_sae_on_another_device_names_the_fix():
    sae = make_sae("blocks.0.hook_resid_post", 32).to("meta")
    with pytest.raises(SaeevalError) as excinfo:
        validate_saes({"elsewhere": sae}, make_tiny_model())
    assert "on meta but the model is float32 on cpu" in one_line_error(excinfo)


def test_unknown_source_is_a_clear_error():
    with pytest.raises(SaeevalError) as excinfo:
        load_saes(make_tiny_model(), source="hub")
    assert "unknown SAE source 'hub'" in one_line_error(excinfo)


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hugging Face offline mode with an empty cache: a download attempt fails at once, never touches the net."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
