"""SAE releases and hub models through the real sae_lens / TransformerLens loaders, from an offline Hugging Face cache.

The cache holds the real file layouts (tests/standins.py) with random weights; nothing of sae_lens is mocked.
References are the files themselves, read here with numpy / safetensors.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import huggingface_hub.constants as hf_constants
import numpy as np
import pytest
import torch
from conftest import gpt2_tokenizer_obj
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from sae_lens import HookedSAETransformer
from safetensors.numpy import load_file as load_numpy
from standins import snapshot_dir, write_gemma_scope
from transformer_lens import HookedTransformerConfig

from saeeval.errors import SaeevalError
from saeeval.hooknames import sae_hook
from saeeval.loading.hub import hub_reachable
from saeeval.loading.models import load_model
from saeeval.loading.weight_processing import processing_of

torch.set_num_threads(1)
REFUSED = "http://127.0.0.1:9"  # nothing listens there: the hub is unreachable at once, on any machine


def preset(*overrides: str):
    """The composed saeeval config for these overrides, as `python -m saeeval ...` composes it."""
    with initialize_config_module(config_module="saeeval.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def one_line(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


@pytest.fixture
def offline_cache(monkeypatch: pytest.MonkeyPatch, hub_cache: Path) -> Path:
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return hub_cache


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch, hub_cache: Path) -> Path:
    """HF_HUB_OFFLINE unset, but no hub answers: the case of a machine without network."""
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", REFUSED)
    return hub_cache


@pytest.fixture(scope="module")
def centred_gpt2(gpt2_folder: Path) -> HookedSAETransformer:
    return instantiate(
        preset(
            "model=hf_folder", f"model.name={gpt2_folder}", "model.from_pretrained_kwargs.center_writing_weights=true"
        ).model
    )


@pytest.fixture(scope="module")
def gemma_scope(hub_cache: Path) -> Path:
    return write_gemma_scope(hub_cache, [1])


def gemma_width_model() -> HookedSAETransformer:
    """Gemma-2 2B's residual width (2304) at two layers; everything else tiny (the SAEs only need the width)."""
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=2304,
        n_heads=1,
        d_head=16,
        d_mlp=32,
        d_vocab=64,
        n_ctx=16,
        act_fn="gelu",
        normalization_type="RMS",
    )
    return HookedSAETransformer(cfg).eval()


def test_gpt2_res_jb_preset_loads_the_cached_legacy_files(offline_cache, gpt2_res_jb, centred_gpt2, recwarn, capsys):
    cfg = preset("saes=gpt2-small-res-jb", "saes.layers=[0,1]")
    saes = instantiate(cfg.saes)(centred_gpt2)
    assert list(saes) == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    for layer, (key, sae) in enumerate(saes.items()):
        written = load_numpy(str(gpt2_res_jb / key / "sae_weights.safetensors"))
        assert type(sae).__name__ == "StandardSAE" and sae_hook(sae) == f"blocks.{layer}.hook_resid_pre"
        assert (sae.cfg.d_in, sae.cfg.d_sae) == (768, 24576)
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            assert np.array_equal(getattr(sae, name).detach().numpy(), written[name]), name
        assert sae.cfg.metadata.model_from_pretrained_kwargs == {"center_writing_weights": True}
    # the processing flags match: no sae_lens advice, nothing printed
    assert not [w for w in recwarn if "model_from_pretrained_kwargs" in str(w.message)]
    assert capsys.readouterr() == ("", "")


def test_gemma_scope_preset_loads_the_cached_params_npz_as_jumprelu(offline_cache, gemma_scope):
    cfg = preset("saes=gemma-scope-2b-pt-res-canonical", "saes.layers=[1]")
    saes = instantiate(cfg.saes)(gemma_width_model())
    ((key, sae),) = saes.items()
    written = np.load(gemma_scope / "layer_1/width_16k/average_l0_102" / "params.npz")
    assert key == "layer_1/width_16k/canonical" and sae_hook(sae) == "blocks.1.hook_resid_post"
    assert type(sae).__name__ == "JumpReLUSAE" and (sae.cfg.d_in, sae.cfg.d_sae) == (2304, 16384)
    for name in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"):
        assert np.array_equal(getattr(sae, name).detach().numpy(), written[name]), name


def test_release_loads_from_the_cache_when_the_hub_is_unreachable(unreachable_hub, gpt2_res_jb, centred_gpt2):
    start = time.monotonic()
    saes = instantiate(preset("saes=gpt2-small-res-jb", "saes.layers=[1]").saes)(centred_gpt2)
    assert time.monotonic() - start < 10
    written = load_numpy(str(gpt2_res_jb / "blocks.1.hook_resid_pre" / "sae_weights.safetensors"))
    assert np.array_equal(saes["blocks.1.hook_resid_pre"].W_enc.detach().numpy(), written["W_enc"])


def test_uncentred_model_with_centred_saes_names_the_override(offline_cache, gpt2_res_jb, gpt2_folder):
    model = instantiate(preset("model=hf_folder", f"model.name={gpt2_folder}").model)
    assert processing_of(model)["center_writing_weights"] is False
    with pytest.raises(SaeevalError) as excinfo:
        instantiate(preset("saes=gpt2-small-res-jb", "saes.layers=[0]").saes)(model)
    msg = one_line(excinfo)
    assert "trained on a model loaded with center_writing_weights=true" in msg
    assert "model.from_pretrained_kwargs.center_writing_weights=true" in msg and "saes.check_processing=false" in msg
    opted_out = instantiate(preset("saes=gpt2-small-res-jb", "saes.layers=[0]", "saes.check_processing=false").saes)
    assert list(opted_out(model)) == ["blocks.0.hook_resid_pre"]


@pytest.mark.parametrize("mode", ["HF_HUB_OFFLINE=1", "unreachable"])
def test_release_missing_from_the_cache_fails_in_one_line_within_seconds(mode, monkeypatch, tmp_path, centred_gpt2):
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", mode == "HF_HUB_OFFLINE=1")
    monkeypatch.setattr(hf_constants, "ENDPOINT", REFUSED)
    start = time.monotonic()
    with pytest.raises(SaeevalError) as excinfo:
        instantiate(preset("saes=gpt2-small-res-jb", "saes.layers=[3]").saes)(centred_gpt2)
    assert time.monotonic() - start < 5
    msg = one_line(excinfo)
    assert "could not download SAE 'blocks.3.hook_resid_pre'" in msg and str(tmp_path / "empty") in msg
    assert ("HF_HUB_OFFLINE is set" if mode == "HF_HUB_OFFLINE=1" else f"{REFUSED} is unreachable") in msg


def test_hub_model_without_network_fails_in_one_line_within_seconds(monkeypatch, tmp_path):
    """The real case on a machine without network: HF_HUB_OFFLINE unset, the real endpoint, an empty cache."""
    if hub_reachable():
        pytest.skip("the hub is reachable from here; this test needs a machine without network")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    start = time.monotonic()
    with pytest.raises(SaeevalError) as excinfo:
        load_model("gpt2-small")
    elapsed = time.monotonic() - start
    assert elapsed < 5, elapsed
    msg = one_line(excinfo)
    assert "'gpt2-small' (hub repo gpt2) are not available offline" in msg and "unreachable" in msg


def write_cached_gpt2(cache: Path, n_embd: int) -> None:
    """A random narrow GPT-2 as the hub repo `gpt2` in the cache (config with the legacy n_ctx key, as on the hub)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    snap = snapshot_dir(cache, "gpt2")
    config = GPT2Config(n_layer=1, n_embd=n_embd, n_head=4, n_positions=64, vocab_size=50257)
    GPT2LMHeadModel(config).save_pretrained(snap)
    cfg = json.loads((snap / "config.json").read_text())
    (snap / "config.json").write_text(json.dumps({**cfg, "n_ctx": 64}))
    gpt2_tokenizer_obj().save_pretrained(snap)


def test_a_gpt2_folder_in_the_working_directory_does_not_shadow_the_hub_model(monkeypatch, tmp_path):
    cache = tmp_path / "hub"
    write_cached_gpt2(cache, n_embd=64)
    workdir = tmp_path / "work"
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=4, n_positions=64, vocab_size=50257)).save_pretrained(
        workdir / "gpt2"
    )
    gpt2_tokenizer_obj().save_pretrained(workdir / "gpt2")
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", REFUSED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hub = load_model("gpt2-small")
        local = load_model("gpt2", source="folder")
    assert hub.cfg.d_model == 64 and hub.cfg.model_name == "gpt2"  # the cached hub repo, not ./gpt2
    assert local.cfg.d_model == 32  # model=hf_folder model.name=gpt2 is the folder


def test_a_release_paired_with_the_zoo_model_names_the_model_it_belongs_to(tmp_path, capfd):
    from cli_harness import run_inprocess

    outcome = run_inprocess("+task=ioi", "saes=gpt2-small-res-jb", "saes.layers=[5]", out=tmp_path, capfd=capfd)
    outcome.assert_one_line_error(
        "SAE release 'gpt2-small-res-jb' belongs to gpt2-small, not to model 'tiny'", "model=gpt2-small", "saes=tiny"
    )
