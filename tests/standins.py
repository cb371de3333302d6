"""Random-weight stand-ins with the real shapes that matter, built offline: HF model folders and a Hugging Face cache.

- `write_gpt2_folder`: GPT-2 architecture (`GPT2LMHeadModel.save_pretrained`) with the real 50257-token tokenizer
  and GPT-2 small's width (768), so the gpt2-small-res-jb SAEs fit; 2 layers instead of 12.
- `write_gemma2_folder`: Gemma-2 architecture with the real 256,000-token vocabulary, Gemma's special and
  chat-turn tokens at their real ids and Gemma's chat template; narrow (d_model 64, 2 layers).
- `write_gemma2_2b_folder`: Gemma-2-2b's full architecture (26 layers, d_model 2304, d_mlp 9216, 8 heads of 256,
  256,000-token vocabulary, soft-caps), random weights in bfloat16 (5.2 GB): the real-depth loading-memory case.
- `write_gpt2_res_jb` / `write_gemma_scope`: the hub repos behind the sae_lens releases gpt2-small-res-jb
  (jbloom/GPT2-Small-SAEs-Reformatted: legacy `cfg.json`, `sae_weights.safetensors`, `sparsity.safetensors` per
  hook) and gemma-scope-2b-pt-res-canonical (google/gemma-scope-2b-pt-res: `params.npz` per
  `layer_X/width_16k/average_l0_N`), at their real widths, laid out as a Hugging Face cache snapshot.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from conftest import gpt2_tokenizer_obj
from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
from safetensors.torch import save_file

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"  # any 40-hex commit id
GEMMA_CHAT_TEMPLATE = (  # the template shipped with google/gemma-2-2b-it
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
# Gemma's ids for its special tokens (google/gemma-2-2b tokenizer.json)
GEMMA_SPECIAL = {
    "<pad>": 0,
    "<eos>": 1,
    "<bos>": 2,
    "<unk>": 3,
    "<mask>": 4,
    "<start_of_turn>": 106,
    "<end_of_turn>": 107,
    "\n": 108,
}
GEMMA_VOCAB = 256_000


def write_gpt2_folder(folder: Path, n_layers: int = 2, seed: int = 0) -> Path:
    """A GPT-2-small-wide random GPT-2 with the real tokenizer, saved with save_pretrained."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(
        GPT2Config(n_layer=n_layers, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257)
    ).eval()
    model.save_pretrained(str(folder))
    gpt2_tokenizer_obj().save_pretrained(str(folder))
    return folder


def gemma_tokenizer(words: list[str]):
    """A word-level tokenizer shaped like Gemma's: 256,000 ids, its special tokens at their ids, "▁"-marked
    spaces, single digits, newline and punctuation as tokens, Gemma's chat template."""
    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex("\n"), behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never"),
            pre_tokenizers.Punctuation(behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    pieces = {piece for text in words for piece, _ in pre.pre_tokenize_str(text)}
    pieces |= {f"▁{p}" for p in pieces if not p.startswith("▁")}  # each word also after a space
    pieces |= {str(d) for d in range(10)} | {f"▁{d}" for d in range(10)}
    vocab = dict(GEMMA_SPECIAL)
    free = (i for i in range(GEMMA_VOCAB) if i not in GEMMA_SPECIAL.values())
    for piece in sorted(pieces - set(vocab)):
        vocab[piece] = next(free)
    for i in free:
        vocab[f"<unused_{i}>"] = i
    assert len(vocab) == GEMMA_VOCAB
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
    )
    tok.chat_template = GEMMA_CHAT_TEMPLATE
    return tok


def write_gemma2_folder(folder: Path, words: list[str], seed: int = 0, width: int = 64) -> Path:
    """A narrow random Gemma-2 (256,000-token vocabulary, d_model `width`) and its Gemma-like tokenizer, saved
    with save_pretrained."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(seed)
    cfg = Gemma2Config(
        vocab_size=GEMMA_VOCAB,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        query_pre_attn_scalar=32,
        max_position_embeddings=512,
        sliding_window=16,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    model = Gemma2ForCausalLM(cfg).eval()
    with torch.no_grad():  # HF initialises the norms' weights to 0 (= scale 1): make them count
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * 0.3)
    model.save_pretrained(str(folder))
    gemma_tokenizer(words).save_pretrained(str(folder))
    return folder


def write_gemma2_2b_folder(folder: Path, seed: int = 0) -> Path:
    """Gemma-2-2b's shape at full depth with random bfloat16 weights (as the hub's config.json gives it), saved with
    save_pretrained. Built on the meta device and filled tensor by tensor: HF's own initialisation of 2.6B
    parameters would take minutes on two cores and hold a float32 copy."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(
        vocab_size=GEMMA_VOCAB,
        hidden_size=2304,
        intermediate_size=9216,
        num_hidden_layers=26,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        query_pre_attn_scalar=256,
        max_position_embeddings=8192,
        sliding_window=4096,
        final_logit_softcapping=30.0,
        attn_logit_softcapping=50.0,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        torch_dtype="bfloat16",
    )
    with torch.device("meta"):
        model = Gemma2ForCausalLM(cfg)
    model = model.to_empty(device="cpu").to(torch.bfloat16).eval()
    model.tie_weights()  # to_empty gives lm_head a storage of its own; the hub's checkpoint has one embedding
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen).mul_(0.02))
    model.save_pretrained(str(folder))
    gemma_tokenizer(["the cat sat"]).save_pretrained(str(folder))
    return folder


def snapshot_dir(hub_cache: Path, repo_id: str) -> Path:
    """`<cache>/models--<org>--<name>/snapshots/<commit>/` with `refs/main` naming it, as huggingface_hub lays out."""
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    snap = repo / "snapshots" / SNAPSHOT
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def release_entry(release: str):
    return get_pretrained_saes_directory()[release]


def legacy_jb_cfg(layer: int) -> dict:
    """The training config jbloom's GPT-2 small SAEs ship as cfg.json (pre-sae_lens-6 keys: hook_point, ...)."""
    hook = f"blocks.{layer}.hook_resid_pre"
    return {
        "model_name": "gpt2-small",
        "hook_point": hook,
        "hook_point_layer": layer,
        "hook_point_head_index": None,
        "dataset_path": "Skylion007/openwebtext",
        "is_dataset_tokenized": False,
        "context_size": 128,
        "use_cached_activations": False,
        "cached_activations_path": f"activations/Skylion007_openwebtext/gpt2-small/{hook}",
        "d_in": 768,
        "n_batches_in_buffer": 128,
        "total_training_tokens": 300000000,
        "store_batch_size": 32,
        "device": "cuda",
        "seed": 42,
        "dtype": "torch.float32",
        "b_dec_init_method": "geometric_median",
        "expansion_factor": 32,
        "from_pretrained_path": None,
        "l1_coefficient": 8e-05,
        "lr": 0.0004,
        "lr_scheduler_name": None,
        "lr_warm_up_steps": 5000,
        "train_batch_size": 4096,
        "use_ghost_grads": False,
        "feature_sampling_window": 1000,
        "feature_sampling_method": None,
        "resample_batches": 1028,
        "feature_reinit_scale": 0.2,
        "dead_feature_window": 5000,
        "dead_feature_estimation_method": "no_fire",
        "dead_feature_threshold": 1e-08,
        "log_to_wandb": True,
        "wandb_project": "mats_sae_training_gpt2_small_resid_pre_5",
        "wandb_entity": None,
        "wandb_log_frequency": 100,
        "n_checkpoints": 10,
        "checkpoint_path": "checkpoints/y1t51byy",
        "d_sae": 24576,
        "tokens_per_buffer": 67108864,
        "run_name": "24576-L1-8e-05-LR-0.0004-Tokens-3.000e+08",
    }


def write_gpt2_res_jb(hub_cache: Path, layers: list[int], seed: int = 0) -> Path:
    """gpt2-small-res-jb's files for `layers` at the real width (768 x 24576); returns the snapshot folder."""
    entry = release_entry("gpt2-small-res-jb")
    snap = snapshot_dir(hub_cache, entry.repo_id)
    gen = torch.Generator().manual_seed(seed)
    for layer in layers:
        folder = snap / entry.saes_map[f"blocks.{layer}.hook_resid_pre"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cfg.json").write_text(json.dumps(legacy_jb_cfg(layer)))
        weights = {
            "W_enc": torch.randn(768, 24576, generator=gen) * 0.05,
            "b_enc": torch.randn(24576, generator=gen) * 0.1,
            "W_dec": torch.randn(24576, 768, generator=gen) * 0.05,
            "b_dec": torch.randn(768, generator=gen) * 0.1,
        }
        save_file(weights, str(folder / "sae_weights.safetensors"))
        save_file({"sparsity": torch.rand(24576, generator=gen) * -6}, str(folder / "sparsity.safetensors"))
    return snap


def write_gemma_scope(hub_cache: Path, layers: list[int], seed: int = 0) -> Path:
    """gemma-scope-2b-pt-res's params.npz for the canonical 16k SAE of `layers` (real shapes: 2304 x 16384);
    returns the snapshot folder."""
    entry = release_entry("gemma-scope-2b-pt-res-canonical")
    snap = snapshot_dir(hub_cache, entry.repo_id)
    rng = np.random.default_rng(seed)
    for layer in layers:
        folder = snap / entry.saes_map[f"layer_{layer}/width_16k/canonical"]
        folder.mkdir(parents=True, exist_ok=True)
        params = {  # uniform draws: as random as normal ones for these tests, and twice as fast to make
            "W_enc": (rng.random((2304, 16384), dtype=np.float32) - 0.5) * 0.04,
            "W_dec": (rng.random((16384, 2304), dtype=np.float32) - 0.5) * 0.04,
            "b_enc": (rng.random(16384, dtype=np.float32) - 0.5) * 0.2,
            "b_dec": (rng.random(2304, dtype=np.float32) - 0.5) * 0.2,
            "threshold": rng.random(16384, dtype=np.float32) * 0.1,
        }
        np.savez(folder / "params.npz", **params)
    return snap
