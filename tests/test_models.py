"""load_model: zoo-format folders, local Hugging Face folders (offline conversion), clear errors otherwise."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from conftest import gpt2_tokenizer_obj
from sae_lens import HookedSAETransformer
from safetensors.torch import save_file
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformer_lens import HookedTransformerConfig
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from saeeval.errors import SaeevalError
from saeeval.loading.models import load_model
from saeeval.loading.zoo import available_zoo_models

torch.set_num_threads(1)

WORDS = ["<bos>", "<unk>", "the", "cat", "sat", "on", "mat", "a", "dog", "ran"]
ZOO_CFG = dict(
    n_layers=2,
    d_model=32,
    n_heads=4,
    d_head=8,
    d_mlp=128,
    d_vocab=len(WORDS),
    n_ctx=16,
    act_fn="gelu",
    normalization_type="LN",
)


def write_zoo_model(root: Path, name: str, seed: int = 0) -> HookedSAETransformer:
    """Write `root/<name>/model/` in the zoo format; return the model whose weights were written."""
    folder = root / name / "model"
    folder.mkdir(parents=True)
    model = HookedSAETransformer(HookedTransformerConfig(**ZOO_CFG, seed=seed)).eval()
    (folder / "config.json").write_text(json.dumps(ZOO_CFG))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<bos>", pad_token="<bos>", unk_token="<unk>"
    )
    tok.save_pretrained(str(folder))
    return model


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


@pytest.fixture(scope="module")
def hf_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GPT2LMHeadModel]:
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=50257)).eval()
    folder = tmp_path_factory.mktemp("hf") / "gpt2-random"
    hf.save_pretrained(str(folder))
    gpt2_tokenizer_obj().save_pretrained(str(folder))
    return folder, hf


@pytest.fixture
def offline_empty_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hugging Face offline mode with an empty cache: a download attempt fails at once, never touches the net."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_hf_folder_loads_offline_with_the_hf_models_logits(hf_gpt2_dir):
    folder, hf = hf_gpt2_dir
    model = load_model(str(folder))
    tokens = model.to_tokens(["The cat sat on the mat.", "Hello"], padding_side="right")
    with torch.no_grad():
        ours, theirs = model(tokens), hf(tokens).logits
    assert isinstance(model, HookedSAETransformer) and not model.training
    assert (model.cfg.n_layers, model.cfg.d_model, model.cfg.model_name) == (2, 64, "gpt2-random")
    assert model.tokenizer is not None and model.to_tokens("Hello")[0, 1].item() == 15496  # real GPT-2 id
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_hf_folder_weights_are_taken_over_not_copied(hf_gpt2_dir):
    """The converted tensors become the parameters: a tied W_U is W_E's own storage (one copy, as in the
    checkpoint), other weights are contiguous, and writing into a parameter never reaches the checkpoint file."""
    folder, hf = hf_gpt2_dir
    ckpt = folder / "model.safetensors"
    before = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    model = load_model(str(folder))
    w_e, w_u = model.embed.W_E, model.unembed.W_U
    assert w_u.T.data_ptr() == w_e.data_ptr() and torch.equal(w_u, hf.lm_head.weight.T)
    assert all(p.is_contiguous() for n, p in model.named_parameters() if n != "unembed.W_U")
    tokens = torch.tensor([[50256, 464, 3797, 3332, 319, 262, 2603]])
    with torch.no_grad():
        assert torch.allclose(model(tokens), hf(tokens).logits, atol=1e-4)
        model.blocks[0].attn.W_Q.zero_()
        w_e.mul_(2)
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == before
    again = load_model(str(folder))
    assert torch.equal(again.embed.W_E, hf.transformer.wte.weight) and again.blocks[0].attn.W_Q.abs().sum() > 0


def mapped_files() -> set[str]:
    """Paths of the files this process has memory-mapped, from /proc/self/maps."""
    return {
        f[5]
        for f in (line.split(maxsplit=5) for line in Path("/proc/self/maps").read_text().splitlines())
        if len(f) == 6
    }


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_hf_folder_load_leaves_no_parameter_on_the_checkpoint_mapping(tmp_path):
    """Once loaded, no parameter views the memory-mapped checkpoint (its pages would stay resident beside the
    parameters): the file is not mapped at all, Gemma's W_U (= embedᵀ) is a copy of its own, and the logits are
    still the Hugging Face model's."""
    from standins import write_gemma2_folder
    from transformers import AutoModelForCausalLM

    folder = write_gemma2_folder(tmp_path / "gemma", ["the cat sat on a mat"])
    ckpt = str((folder / "model.safetensors").resolve())
    model = load_model(str(folder), source="folder")
    assert ckpt not in mapped_files()
    hf = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    assert ckpt in mapped_files()  # the check can fail: Hugging Face's own loading keeps views of the mapping
    embed = hf.model.embed_tokens.weight
    w_u = model.unembed.W_U
    assert w_u.T.is_contiguous() and w_u.untyped_storage().data_ptr() != model.embed.W_E.untyped_storage().data_ptr()
    assert torch.equal(w_u, embed.T)
    tokens = torch.tensor([[2, 5, 9, 11, 7]])
    with torch.no_grad():
        assert torch.allclose(model(tokens), hf(tokens).logits, atol=1e-4)


def test_hf_folder_weight_processing_keeps_log_probs(hf_gpt2_dir):
    folder, hf = hf_gpt2_dir
    model = load_model(
        str(folder), from_pretrained_kwargs={"fold_ln": True, "center_writing_weights": True, "center_unembed": True}
    )
    tokens = torch.tensor([[50256, 464, 3797, 3332, 319, 262, 2603]])
    with torch.no_grad():
        ours = model(tokens).log_softmax(-1)
        theirs = hf(tokens).logits.log_softmax(-1)
    assert model.cfg.normalization_type == "LNPre"  # the layer norm weights were folded away
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_zoo_round_trip_gives_identical_logits(tmp_path):
    original = write_zoo_model(tmp_path, "toy")
    model = load_model("toy", zoo_root=tmp_path)
    tokens = model.to_tokens(["the cat sat on a mat", "a dog ran"], padding_side="right")
    assert tokens[0].tolist() == [0, 2, 3, 4, 5, 7, 6]
    with torch.no_grad():
        assert torch.equal(model(tokens), original(tokens))
    assert model.cfg.model_name == "toy" and not model.training


def test_zoo_model_loads_in_the_requested_dtype(tmp_path):
    original = write_zoo_model(tmp_path, "toy")
    model = load_model("toy", dtype="float64", zoo_root=tmp_path)
    tokens = torch.tensor([[0, 2, 3, 4]])
    assert model.cfg.dtype == torch.float64 and model.W_E.dtype == torch.float64
    with torch.no_grad():
        assert torch.allclose(model(tokens).float(), original(tokens), atol=1e-5)


def test_zoo_format_folder_loads_by_path(tmp_path):
    original = write_zoo_model(tmp_path, "toy")
    model = load_model(str(tmp_path / "toy" / "model"))
    tokens = torch.tensor([[0, 8, 9]])
    with torch.no_grad():
        assert torch.equal(model(tokens), original(tokens))
    assert model.cfg.model_name == "toy"


def test_available_zoo_models_lists_folders_with_a_model(tmp_path):
    write_zoo_model(tmp_path, "beta")
    write_zoo_model(tmp_path, "alpha")
    (tmp_path / "not-a-model").mkdir()
    assert available_zoo_models(tmp_path) == ["alpha", "beta"]
    assert available_zoo_models(tmp_path / "missing") == []


def test_unknown_model_name_is_a_one_line_error(tmp_path):
    with pytest.raises(SaeevalError) as excinfo:
        load_model("no-such-model", zoo_root=tmp_path)
    msg = one_line_error(excinfo)
    assert msg.startswith("unknown model 'no-such-model'")
    assert "gpt2-small" in msg and "local Hugging Face folder" in msg


def test_transformer_lens_name_without_weights_offline_is_a_clear_error(offline_empty_hub, tmp_path):
    with pytest.raises(SaeevalError) as excinfo:
        load_model("gpt2-small", zoo_root=tmp_path)
    msg = one_line_error(excinfo)
    assert "'gpt2-small'" in msg and "not available offline" in msg and "local Hugging Face folder" in msg


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(SaeevalError) as excinfo:
        load_model(str(tmp_path), zoo_root=tmp_path / "zoo")
    assert "has no config.json" in one_line_error(excinfo)


def test_unknown_dtype_is_a_clear_error():
    with pytest.raises(SaeevalError) as excinfo:
        load_model("tiny", dtype="float8")
    assert "unknown dtype 'float8'" in one_line_error(excinfo)


def test_hf_folder_without_weights_is_a_clear_error(tmp_path):
    GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50257).save_pretrained(str(tmp_path / "no-weights"))
    with pytest.raises(SaeevalError) as excinfo:
        load_model(str(tmp_path / "no-weights"), zoo_root=tmp_path / "zoo")
    msg = one_line_error(excinfo)
    assert msg.startswith("could not load Hugging Face folder") and "causal LM" in msg
