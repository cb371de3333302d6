"""Load the model under evaluation as a HookedSAETransformer, from three places, never silently online.

Resolution order for `name` (`source="auto"`): a bundled zoo model, a TransformerLens pretrained name, a local
folder (zoo format or a Hugging Face model); `source` forces one of them. A hub name is never shadowed by a
folder of the same name in the working directory (`saeeval.loading.hub`). Every failure is a one-line `SaeevalError`
that says what to do instead. The processing flags applied are recorded for `saeeval.loading.weight_processing`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from sae_lens import HookedSAETransformer
from safetensors.torch import load_file
from transformer_lens import HookedTransformerConfig
from transformer_lens import loading_from_pretrained as tl_loading

from saeeval.errors import SaeevalError, first_line
from saeeval.loading.file_pages import Span, copy_out, file_mappings, overlaps, release_pages, tensor_span
from saeeval.loading.finite_weights import check_finite_weights
from saeeval.loading.hub import cache_dir, hub_access
from saeeval.loading.weight_processing import PROCESSING_KEYS, record_processing

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
SOURCES = ("auto", "zoo", "transformer_lens", "folder")
_CONFIG_KEYS = ("default_prepend_bos", "n_ctx", "first_n_layers")


def default_zoo_root() -> Path:
    """The folder holding the bundled zoo (`saeeval/zoo/`), wherever the package is installed."""
    return Path(str(files("saeeval.zoo")))


def available_zoo_models(zoo_root: str | Path | None = None) -> list[str]:
    """Names of the bundled models: zoo sub-folders that hold a `model/config.json`."""
    root = Path(zoo_root) if zoo_root is not None else default_zoo_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "model" / "config.json").is_file())


def load_model(
    name: str = "tiny",
    *,
    source: str = "auto",
    device: str = "cpu",
    dtype: str = "float32",
    from_pretrained_kwargs: dict[str, Any] | None = None,
    zoo_root: str | Path | None = None,
) -> HookedSAETransformer:
    """Load `name` (zoo name | TransformerLens name | local zoo-format or Hugging Face folder) in eval mode.

    No weight processing (layer-norm folding, centering) is applied unless `from_pretrained_kwargs` asks for
    it, so logits equal the original checkpoint's; SAEs trained on processed weights need the same flags
    (`saeeval.loading.weight_processing.check_processing` enforces it).
    """
    if source not in SOURCES:
        raise SaeevalError(f"unknown model source '{source}': use one of {', '.join(SOURCES)}")
    torch_dtype = _torch_dtype(dtype)
    if device == "auto":  # the CLI resolves auto to the trainer's device first; called directly: the best one here
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs = dict(from_pretrained_kwargs or {})
    processing = {k: bool(kwargs.get(k, False)) for k in PROCESSING_KEYS}
    zoo = Path(zoo_root) if zoo_root is not None else default_zoo_root()
    if source in ("auto", "zoo") and name in available_zoo_models(zoo):
        _no_kwargs(name, kwargs)
        model = load_zoo_folder(zoo / name / "model", name, device=device, dtype=torch_dtype)
    elif source in ("auto", "transformer_lens") and _is_transformer_lens_name(name):
        model = _load_transformer_lens(name, device, dtype, kwargs)
    elif source in ("auto", "folder") and Path(name).expanduser().exists():
        model = _load_local_folder(Path(name).expanduser(), device, torch_dtype, kwargs)
    else:
        raise _unknown_model(name, source, zoo)
    record_processing(model, processing)
    check_finite_weights(f"model '{name}'", model, "load an intact checkpoint (re-download or re-save it)")
    model.eval()
    return model


def _unknown_model(name: str, source: str, zoo: Path) -> SaeevalError:
    if source == "folder":
        return SaeevalError(
            f"model folder '{name}' does not exist: point model.name at a Hugging Face model folder "
            "(saved with save_pretrained) or a zoo-format model folder"
        )
    if source == "transformer_lens":
        return SaeevalError(
            f"'{name}' is not a TransformerLens model name: use an official name or alias "
            "(e.g. gpt2-small, gemma-2-2b), or model=hf_folder for a local folder"
        )
    zoo_names = ", ".join(available_zoo_models(zoo)) or "tiny"
    where = "zoo" if source == "zoo" else "zoo name, TransformerLens name or folder"
    return SaeevalError(
        f"unknown model '{name}' (not a {where}): use a zoo name ({zoo_names}), a TransformerLens model name "
        "(e.g. gpt2-small) or a local Hugging Face folder"
    )


def _torch_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise SaeevalError(f"unknown dtype '{dtype}': use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _no_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise SaeevalError(
            f"zoo model '{name}' takes no from_pretrained_kwargs (got {sorted(kwargs)}): remove them from the "
            "model config"
        )


def _is_transformer_lens_name(name: str) -> bool:
    try:
        tl_loading.get_official_model_name(name)
    except ValueError:
        return False
    return True


def _is_zoo_format(folder: Path) -> bool:
    """Zoo folders store HookedTransformerConfig fields (d_model, ...); HF configs carry a model_type."""
    cfg = json.loads((folder / "config.json").read_text())
    return "model_type" not in cfg and "d_model" in cfg


def _load_local_folder(folder: Path, device: str, dtype: torch.dtype, kwargs: dict[str, Any]) -> HookedSAETransformer:
    if not (folder / "config.json").is_file():
        raise SaeevalError(
            f"model folder '{folder}' has no config.json: point model.name at a Hugging Face model folder "
            "(saved with save_pretrained) or a zoo-format model folder"
        )
    if _is_zoo_format(folder):
        _no_kwargs(str(folder), kwargs)
        return load_zoo_folder(folder, device=device, dtype=dtype)
    return _load_hf_folder(folder, device, dtype, kwargs)


def load_zoo_folder(
    folder: str | Path, name: str | None = None, *, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> HookedSAETransformer:
    """The zoo model format, read in one place (saeeval, scripts/build_zoo.py and its tests): config.json =
    HookedTransformerConfig kwargs, model.safetensors = its state_dict, tokenizer files beside them."""
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    name = name or (folder.parent.name if folder.name == "model" else folder.name)
    cfg_kwargs = json.loads((folder / "config.json").read_text())
    cfg_kwargs.setdefault("model_name", name)
    cfg_kwargs.update(device=device, dtype=dtype, init_weights=False)
    cfg = HookedTransformerConfig(**cfg_kwargs)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder)) if (folder / "tokenizer.json").is_file() else None
    model = HookedSAETransformer(cfg, tokenizer=tokenizer)
    state_dict = load_file(str(folder / "model.safetensors"), device=str(device))
    missing, unexpected = model.load_state_dict({k: v.to(dtype) for k, v in state_dict.items()}, strict=False)
    buffers = {k for k, _ in model.named_buffers()}
    missing_params = [k for k in missing if k not in buffers]
    if missing_params or unexpected:
        raise SaeevalError(
            f"zoo model '{name}' weights do not match its config.json (missing {missing_params[:3]}, unexpected "
            f"{list(unexpected)[:3]}): rebuild it with scripts/build_zoo.py"
        )
    return model


def _load_hf_folder(folder: Path, device: str, dtype: torch.dtype, kwargs: dict[str, Any]) -> HookedSAETransformer:
    """Convert a local Hugging Face causal LM with TransformerLens's converters, without touching the network.

    `HookedTransformer.from_pretrained` insists on an official model name; the lower-level loaders accept a
    path plus the already loaded `hf_model`, so nothing is fetched. Architectures whose TransformerLens config
    exists only under official names (Gemma-2) get that template with the folder's own shape.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    processing = {k: kwargs.pop(k, False) for k in PROCESSING_KEYS}
    config_kwargs = {k: kwargs.pop(k) for k in _CONFIG_KEYS if k in kwargs}
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


def _load_transformer_lens(name: str, device: str, dtype: str, kwargs: dict[str, Any]) -> HookedSAETransformer:
    """`from_pretrained_no_processing` from the Hugging Face cache or hub, failing in one line when neither has it."""
    repo = tl_loading.get_official_model_name(name)
    with hub_access() as offline:
        try:
            return HookedSAETransformer.from_pretrained_no_processing(name, device=device, dtype=dtype, **kwargs)
        except OSError as err:
            if offline is None:
                first = first_line(err)
                raise SaeevalError(
                    f"could not download TransformerLens model '{name}' (hub repo {repo}): {first}"
                ) from err
            raise SaeevalError(
                f"weights for TransformerLens model '{name}' (hub repo {repo}) are not available offline ({offline}, "
                f"and they are not in the Hugging Face cache {cache_dir()}): download them once with network access, "
                "or use a local Hugging Face folder (model=hf_folder)"
            ) from err
