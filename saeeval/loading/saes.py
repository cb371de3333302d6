"""Load SAEs (bundled zoo | sae_lens pretrained release | SAELens folders) and check they fit the model.

`HookedSAETransformer.add_sae` only warns on a wrong hook name and a wrong width fails deep inside a forward
pass, so every SAE is validated here first: hook exists, d_in matches the activation, device/dtype match.
"""

from __future__ import annotations

import difflib
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE, HookedSAETransformer
from sae_lens.loading.pretrained_saes_directory import get_config_overrides, get_pretrained_saes_directory
from sae_lens.util import dtype_to_str
from transformer_lens.loading_from_pretrained import get_official_model_name

from saeeval.engine.spliceable import check_spliceable, model_device
from saeeval.errors import SaeevalError, first_line
from saeeval.hooknames import sae_hook
from saeeval.loading.finite_weights import check_finite_weights
from saeeval.loading.hub import cache_dir, hub_access
from saeeval.loading.sae_folder import RESAVE, check_sae_folder
from saeeval.loading.weight_processing import check_processing as check_model_processing
from saeeval.loading.zoo import available_zoo_models, default_zoo_root

SOURCES = ("zoo", "release", "folder")


def load_saes(
    model: HookedSAETransformer,
    *,
    source: str = "zoo",
    name: str | None = None,
    hooks: list[str] | None = None,
    release: str | None = None,
    sae_ids: list[str] | None = None,
    layers: list[int] | None = None,
    id_template: str | None = None,
    paths: list[str] | None = None,
    zoo_root: str | Path | None = None,
    check_processing: bool = True,
) -> dict[str, SAE]:
    """Load SAEs onto the model's device and dtype, validated against it, keyed by a unique name.

    Keys: zoo → hook name; release → sae_id; folder → folder name (a clash gets a `__2`, `__3` suffix),
    so two SAEs on the same hook can be compared. `check_processing`: require the model's weight processing to
    be the one the SAEs record (`model_from_pretrained_kwargs`); off = evaluate the model as loaded.
    """
    device, dtype = model_device(model), model.cfg.dtype
    if source == "zoo":
        saes = _load_zoo(model, name, hooks, zoo_root, device, dtype)
    elif source == "release":
        ids = _expand_ids(sae_ids, layers, id_template)
        saes = _load_release(release, ids, device, dtype, model if check_processing else None)
    elif source == "folder":
        saes = _load_folders(paths, device, dtype)
    else:
        raise SaeevalError(f"unknown SAE source '{source}': use one of {', '.join(SOURCES)}")
    if not saes:
        raise SaeevalError(
            f"no SAE selected (saes.hooks={hooks}), so there is nothing to splice: list at least one "
            "hook in saes.hooks, or drop it to take every SAE"
        )
    if check_processing:
        for key, sae in saes.items():
            check_model_processing(sae.cfg.metadata.model_from_pretrained_kwargs, model, key)
    validate_saes(saes, model)
    return saes


def validate_saes(saes: dict[str, SAE], model: HookedSAETransformer) -> None:
    """Raise a one-line SaeevalError unless every SAE can be spliced into `model` as it is (saeeval.engine.spliceable)
    and holds only finite weights."""
    check_spliceable(saes, model)
    for key, sae in saes.items():
        check_finite_weights(
            f"SAE '{key}' at hook '{sae_hook(sae)}'", sae, "retrain or re-export it; saeeval will not splice it"
        )


def _unique_key(key: str, taken: dict[str, Any]) -> str:
    n = 2
    unique = key
    while unique in taken:
        unique, n = f"{key}__{n}", n + 1
    return unique


def _load_zoo(
    model: HookedSAETransformer,
    name: str | None,
    hooks: list[str] | None,
    zoo_root: str | Path | None,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, SAE]:
    root = Path(zoo_root) if zoo_root is not None else default_zoo_root()
    name = name or model.cfg.model_name
    sae_root = root / name / "saes"
    folders = sorted(p for p in sae_root.iterdir() if (p / "cfg.json").is_file()) if sae_root.is_dir() else []
    if not folders:
        zoo = ", ".join(available_zoo_models(root)) or "none installed"
        raise SaeevalError(
            f"zoo model '{name}' has no bundled SAEs: use saes.name from the zoo ({zoo}) or another "
            "SAE source (release, folder)"
        )
    saes: dict[str, SAE] = {}
    for folder in folders:
        sae = _load_folder(folder, device, dtype)
        hook = sae_hook(sae)
        key = hook if hook not in saes else folder.name
        saes[_unique_key(key, saes)] = sae
    if hooks is None:
        return saes
    available = sorted({sae_hook(s) for s in saes.values()})
    unknown = [h for h in hooks if h not in available]
    if unknown:
        raise SaeevalError(
            f"zoo '{name}' has no SAE at hook '{unknown[0]}': choose saes.hooks from {', '.join(available)}"
        )
    return {k: s for k, s in saes.items() if sae_hook(s) in hooks}


def _load_folder(path: Path, device: torch.device, dtype: torch.dtype) -> SAE:
    check_sae_folder(path)
    try:
        return SAE.load_from_disk(str(path), device=str(device), dtype=dtype_to_str(dtype))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # cfg.json fields or shapes sae_lens rejects
        reason = first_line(err)
        raise SaeevalError(
            f"SAE folder '{path}' could not be loaded by sae_lens ({type(err).__name__}: {reason[:200]}): {RESAVE}"
        ) from None


def _load_folders(paths: list[str] | None, device: torch.device, dtype: torch.dtype) -> dict[str, SAE]:
    if not paths:
        raise SaeevalError("SAE source 'folder' needs saes.paths: give a list of folders written by sae.save_model()")
    saes: dict[str, SAE] = {}
    for path in paths:
        folder = Path(path)
        saes[_unique_key(folder.resolve().name, saes)] = _load_folder(folder, device, dtype)
    return saes


def _expand_ids(sae_ids: list[str] | None, layers: list[int] | None, id_template: str | None) -> list[str]:
    """sae_ids as given, then one id per layer from `id_template` (e.g. "blocks.{layer}.hook_resid_pre")."""
    ids = list(sae_ids or [])
    if layers is not None:
        if not id_template or "{layer}" not in id_template:
            raise SaeevalError(
                "saes.layers needs saes.id_template containing '{layer}', e.g. 'blocks.{layer}.hook_resid_pre'"
            )
        ids += [id_template.format(layer=layer) for layer in layers]
    if not ids:
        raise SaeevalError("SAE source 'release' needs saes.sae_ids or saes.layers (with saes.id_template)")
    return list(dict.fromkeys(ids))


def _check_release(release: str | None, sae_ids: list[str]) -> None:
    """Fail before any download when the release or an id is not in sae_lens's registry."""
    directory = get_pretrained_saes_directory()
    if not release:
        raise SaeevalError("SAE source 'release' needs saes.release, e.g. gpt2-small-res-jb")
    if release not in directory:
        if "/" in release:
            return  # a Hugging Face repo id in SAELens format: sae_lens loads it directly
        close = difflib.get_close_matches(release, list(directory), n=3, cutoff=0.5)
        hint = ", ".join(close or list(directory)[:3])
        raise SaeevalError(
            f"unknown SAE release '{release}': use a sae_lens release name (e.g. {hint}) or a Hugging Face repo id"
        )
    valid = list(directory[release].saes_map)
    for sae_id in sae_ids:
        if sae_id not in valid:
            close = difflib.get_close_matches(sae_id, valid, n=3, cutoff=0.5)
            hint = ", ".join(close or valid[:3])
            raise SaeevalError(
                f"release '{release}' has no SAE id '{sae_id}': use one of its ids (e.g. {hint}; {len(valid)} in all)"
            )


def _base_model(name: str) -> str | None:
    """TransformerLens's official name without an instruction-tuning suffix (pretrained-model SAEs are used on
    the -it variant too); None for a name TransformerLens does not know (a local model: nothing to compare)."""
    try:
        return get_official_model_name(name).removesuffix("-it")
    except ValueError:
        return None


def _check_release_model(release: str | None, model: HookedSAETransformer) -> None:
    """Refuse a release trained on another model than `model` (sae_lens's registry names its model): a bundled zoo
    model, or a TransformerLens model of another name. A model saeeval cannot name (a local folder) is let through."""
    entry = get_pretrained_saes_directory().get(release or "")
    if entry is None:
        return
    trained_on, name = entry.model, model.cfg.model_name
    ours = name in available_zoo_models()
    if not ours and (_base_model(name) is None or _base_model(name) == _base_model(trained_on)):
        return
    preset = resources.files("saeeval.conf").joinpath("model", f"{trained_on}.yaml").is_file()
    choose = f"model={trained_on}" if preset else f"model.name={trained_on}"
    raise SaeevalError(
        f"SAE release '{release}' belongs to {trained_on}, not to model '{name}': load {trained_on} ({choose} on the "
        f"command line), or choose SAEs trained on '{name}'" + (f" (saes={name})" if ours else "")
    )


def _load_release(
    release: str | None,
    sae_ids: list[str],
    device: torch.device,
    dtype: torch.dtype,
    model: HookedSAETransformer | None,
) -> dict[str, SAE]:
    """`SAE.from_pretrained` per id, from the cache when the hub is unreachable; the processing check (when
    `model` is given) runs on the registry's record first, so a mismatch fails before any download."""
    _check_release(release, sae_ids)
    if model is not None:
        _check_release_model(release, model)
    if model is not None and release in get_pretrained_saes_directory():
        for sae_id in sae_ids:
            required = get_config_overrides(release, sae_id).get("model_from_pretrained_kwargs")
            check_model_processing(required, model, sae_id)
    saes: dict[str, SAE] = {}
    with hub_access() as offline, warnings.catch_warnings():
        # saeeval checks the processing flags itself (saeeval.loading.weight_processing); sae_lens's advice names
        # its own API
        warnings.filterwarnings("ignore", message=r"\s*This SAE has non-empty model_from_pretrained_kwargs")
        for sae_id in sae_ids:
            try:
                sae = SAE.from_pretrained(release, sae_id, device=str(device), dtype=dtype_to_str(dtype))
            except OSError as err:
                why = (
                    f"{offline}, and it is not in the Hugging Face cache {cache_dir()}"
                    if offline
                    else (first_line(err))
                )
                raise SaeevalError(
                    f"could not download SAE '{sae_id}' of release '{release}' ({why}): download it once with "
                    "network access, or save it with sae.save_model and use saes=folder"
                ) from err
            saes[_unique_key(sae_id, saes)] = sae
    return saes
