"""A local Hugging Face causal LM as a HookedSAETransformer, offline: TransformerLens's converters on the folder's
own weights, which the model then takes over (no second copy of the checkpoint stays in memory).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from sae_lens import HookedSAETransformer
from transformer_lens import HookedTransformerConfig
from transformer_lens import loading_from_pretrained as tl_loading

from saeeval.errors import SaeevalError, first_line
from saeeval.loading.file_pages import Span, copy_out, file_mappings, overlaps, release_pages, tensor_span
from saeeval.loading.weight_processing import PROCESSING_KEYS

CONFIG_KEYS = ("default_prepend_bos", "n_ctx", "first_n_layers")
"""`from_pretrained_kwargs` that set config fields rather than load options."""


def load_hf_folder(folder: Path, device: str, dtype: torch.dtype, kwargs: dict[str, Any]) -> HookedSAETransformer:
    """Convert a local Hugging Face causal LM with TransformerLens's converters, without touching the network.

    `HookedTransformer.from_pretrained` insists on an official model name; the lower-level loaders accept a
    path plus the already loaded `hf_model`, so nothing is fetched. Architectures whose TransformerLens config
    exists only under official names (Gemma-2) get that template with the folder's own shape.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    processing = {k: kwargs.pop(k, False) for k in PROCESSING_KEYS}
    config_kwargs = {k: kwargs.pop(k) for k in CONFIG_KEYS if k in kwargs}
    path = str(folder.resolve())
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
        with tempfile.TemporaryDirectory(prefix="saeeval-hf-config-") as tmp:
            config_dir = _config_only_folder(hf_model.config, Path(tmp))
            hf_cfg = hf_model.config.to_dict()
            if _architecture(hf_cfg) in NAME_ONLY_ARCHITECTURES:
                cfg = _name_only_config(hf_cfg, device, dtype, **config_kwargs)
            else:
                cfg = tl_loading.get_pretrained_model_config(
                    config_dir,
                    hf_cfg=hf_cfg,
                    fold_ln=processing["fold_ln"],
                    device=device,
                    dtype=dtype,
                    **config_kwargs,
                )
            with torch.no_grad():  # plain views of the HF tensors, not autograd nodes holding them
                state_dict = tl_loading.get_pretrained_state_dict(config_dir, cfg, hf_model=hf_model, dtype=dtype)
    except (OSError, ValueError, KeyError, AttributeError, NotImplementedError) as err:
        reason = first_line(err)
        raise SaeevalError(
            f"could not load Hugging Face folder '{folder}' ({reason}): it needs config.json, the weights and "
            "tokenizer files of a causal LM that TransformerLens supports"
        ) from err
    del hf_model  # its weights live on only where the converted state dict views them
    cfg.model_name = folder.resolve().name
    model = HookedSAETransformer(cfg, tokenizer, move_to_device=False)
    if any(processing.values()):
        model.load_and_process_state_dict(state_dict, **processing)
    else:
        take_over_weights(model, state_dict, [p.resolve() for p in folder.glob("*.safetensors")])
    model.move_model_modules_to_device()
    return model


def take_over_weights(model: Any, state_dict: dict[str, torch.Tensor], checkpoint_files: Iterable[Path] = ()) -> None:
    """Load a converted state dict by making its tensors the model's parameters (`assign`), not copies of them.

    Why: TransformerLens's loader copies every tensor into freshly allocated parameters while the Hugging Face
    model still holds its own, so loading peaked near 4× the checkpoint. Here each tensor is taken over in the
    parameter's dtype, made contiguous one at a time (a view's source is freed once its last view is replaced),
    except W_U, which checkpoints store as `lm_head.weight` (`[V, d]`): its transpose stays a view (the unembedding
    reads it as a transposed matrix at no cost), so a tied W_U is W_E's own storage (GPT-2: one copy, as in the
    checkpoint). Tensors that still view the memory-mapped `checkpoint_files` are copied and the file's pages
    they read given back at once (`saeeval.loading.file_pages`), so neither the peak nor the settled process holds the
    checkpoint beside the parameters. Lightning's `.to` unties W_U again on a device or dtype change (each
    parameter is moved alone). TransformerLens's Gemma format keeps W_E = embed·√d_model, a scaled copy beside
    W_U = embedᵀ, so there the checkpoint's one embedding is held twice.
    """
    state_dict = model.fill_missing_keys(state_dict)
    targets = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    mappings = file_mappings(checkpoint_files)
    pending = {  # tensors still to read the file: the source each one is, the bytes it reads
        key: (_source(_copied_form(key, t)), tensor_span(t))
        for key, t in state_dict.items()
        if overlaps(tensor_span(t), mappings)
    }
    copies: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}
    for key in list(state_dict):
        tensor, read = state_dict.pop(key), pending.pop(key, None)
        keep = [span for source, span in pending.values() if read is None or source != read[0]]
        if key in targets:
            form = _copied_form(key, tensor)
            owned = _owned(form, targets[key].dtype, mappings, copies, keep)
            tensor = owned.T if form is not tensor else owned
        model.load_state_dict({key: tensor}, strict=False, assign=True)
        if read is not None:
            release_pages(read[1], mappings, keep)
        del tensor


def _copied_form(key: str, tensor: torch.Tensor) -> torch.Tensor:
    """W_U is copied as the checkpoint's `[V, d]` matrix when it is one transposed, so it keeps the layout (and a
    tie to W_E) it has there; every other tensor as it is."""
    return tensor.T if key == "unembed.W_U" and tensor.T.is_contiguous() else tensor


def _source(tensor: torch.Tensor) -> tuple[Any, ...]:
    return tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype


def _owned(
    tensor: torch.Tensor,
    dtype: torch.dtype,
    mappings: list[Span],
    copies: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]],
    keep: list[Span],
) -> torch.Tensor:
    """`tensor` in `dtype`, contiguous and in memory of its own (never a view of the checkpoint's mapping); one
    copy per source, so tied tensors stay tied (`copies` keeps each source alive, so no address is reused).
    Mapped pages in `keep` (read by tensors not yet taken over) stay resident."""
    source = (*_source(tensor), dtype)
    if source in copies:
        return copies[source][1]
    owned = tensor.to(dtype).contiguous()
    if overlaps(tensor_span(owned), mappings):
        owned = copy_out(owned, mappings, keep)
        copies[source] = (tensor, owned)
    return owned


# Architectures TransformerLens 3.9 configures from official names only (never from a config file), with the
# official model whose settings (normalisation, soft caps, local/global attention) the architecture shares.
NAME_ONLY_ARCHITECTURES = {"Gemma2ForCausalLM": "google/gemma-2-2b"}
_LAYER_TYPES = {"sliding_attention": "local", "full_attention": "global"}


def _architecture(hf_cfg: dict[str, Any]) -> str:
    return (hf_cfg.get("architectures") or [""])[0]


def _name_only_config(
    hf: dict[str, Any],
    device: str,
    dtype: torch.dtype,
    *,
    n_ctx: int | None = None,
    default_prepend_bos: bool | None = None,
    first_n_layers: int | None = None,
) -> HookedTransformerConfig:
    """The official template of the folder's architecture, with every shape and setting its config.json gives."""
    cfg = tl_loading.convert_hf_model_config(NAME_ONLY_ARCHITECTURES[_architecture(hf)])
    rope = hf.get("rope_parameters") or {}
    layer_types = hf.get("layer_types") or [
        "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(hf["num_hidden_layers"])
    ]
    cfg.update(
        d_model=hf["hidden_size"],
        d_head=hf["head_dim"],
        n_heads=hf["num_attention_heads"],
        n_key_value_heads=hf["num_key_value_heads"],
        d_mlp=hf["intermediate_size"],
        n_layers=first_n_layers or hf["num_hidden_layers"],
        n_ctx=n_ctx or hf["max_position_embeddings"],
        eps=hf["rms_norm_eps"],
        d_vocab=hf["vocab_size"],
        act_fn=hf["hidden_activation"],
        rotary_base=float(hf.get("rope_theta", rope.get("rope_theta", cfg["rotary_base"]))),
        window_size=hf["sliding_window"],
        attn_types=[_LAYER_TYPES[t] for t in layer_types],
        attn_scores_soft_cap=hf["attn_logit_softcapping"],
        output_logits_soft_cap=hf["final_logit_softcapping"],
        attn_scale=float(hf["query_pre_attn_scalar"]) ** 0.5,
        init_weights=False,
        device=device,
        dtype=dtype,
        n_devices=1,
        from_checkpoint=False,
        default_prepend_bos=True if default_prepend_bos is None else default_prepend_bos,
    )
    cfg.pop("tokenizer_name", None)
    return HookedTransformerConfig.from_dict(cfg)


def _config_only_folder(hf_config: Any, tmp: Path) -> str:
    """A neutrally named copy of the HF config that TransformerLens's converter can read.

    TL infers some architectures from the *path* (any path containing "llama" or "gemma" skips reading the
    config), and its GPT-2 converter reads the legacy `n_ctx` key that transformers 5 no longer writes.
    """
    folder = tmp / "model"
    hf_config.save_pretrained(str(folder))
    cfg_file = folder / "config.json"
    cfg = json.loads(cfg_file.read_text())
    if "n_ctx" not in cfg and "n_positions" in cfg:
        cfg["n_ctx"] = cfg["n_positions"]
    cfg_file.write_text(json.dumps(cfg))
    return str(folder)
