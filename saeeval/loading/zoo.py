"""The bundled zoo and its model format: where the zoo is, which models it holds, and reading a zoo-format folder
(config.json = HookedTransformerConfig fields, model.safetensors = its state dict, tokenizer files beside them)."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import torch
from sae_lens import HookedSAETransformer
from safetensors.torch import load_file
from transformer_lens import HookedTransformerConfig

from saeeval.errors import SaeevalError


def default_zoo_root() -> Path:
    """The folder holding the bundled zoo (`saeeval/zoo/`), wherever the package is installed."""
    return Path(str(files("saeeval.zoo")))


def available_zoo_models(zoo_root: str | Path | None = None) -> list[str]:
    """Names of the bundled models: zoo sub-folders that hold a `model/config.json`."""
    root = Path(zoo_root) if zoo_root is not None else default_zoo_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "model" / "config.json").is_file())


def is_zoo_format(folder: Path) -> bool:
    """Zoo folders store HookedTransformerConfig fields (d_model, ...); HF configs carry a model_type."""
    cfg = json.loads((folder / "config.json").read_text())
    return "model_type" not in cfg and "d_model" in cfg


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
