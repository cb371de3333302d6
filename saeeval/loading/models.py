"""Load the model under evaluation as a HookedSAETransformer, from three places, never silently online.

Resolution order for `name` (`source="auto"`): a bundled zoo model, a TransformerLens pretrained name, a local
folder (zoo format or a Hugging Face model); `source` forces one of them. A hub name is never shadowed by a
folder of the same name in the working directory (`saeeval.loading.hub`). Every failure is a one-line `SaeevalError`
that says what to do instead. The processing flags applied are recorded for `saeeval.loading.weight_processing`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from sae_lens import HookedSAETransformer
from transformer_lens import loading_from_pretrained as tl_loading

from saeeval.errors import SaeevalError, first_line
from saeeval.loading.finite_weights import check_finite_weights
from saeeval.loading.hf_folder import load_hf_folder
from saeeval.loading.hub import cache_dir, hub_access
from saeeval.loading.weight_processing import PROCESSING_KEYS, record_processing
from saeeval.loading.zoo import available_zoo_models, default_zoo_root, is_zoo_format, load_zoo_folder

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
SOURCES = ("auto", "zoo", "transformer_lens", "folder")


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


def _load_local_folder(folder: Path, device: str, dtype: torch.dtype, kwargs: dict[str, Any]) -> HookedSAETransformer:
    if not (folder / "config.json").is_file():
        raise SaeevalError(
            f"model folder '{folder}' has no config.json: point model.name at a Hugging Face model folder "
            "(saved with save_pretrained) or a zoo-format model folder"
        )
    if is_zoo_format(folder):
        _no_kwargs(str(folder), kwargs)
        return load_zoo_folder(folder, device=device, dtype=dtype)
    return load_hf_folder(folder, device, dtype, kwargs)


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
