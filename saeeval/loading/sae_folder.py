"""Check an SAELens-format SAE folder (cfg.json + sae_weights.safetensors) before sae_lens reads it, so a
broken folder is one line naming it, what is wrong and the fix, never a traceback from deep inside sae_lens.

Weights are only ever read as safetensors: a pickled `sae_weights.pt` can run arbitrary code when loaded,
so it is refused by name and never opened.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from saeeval.errors import SaeevalError, first_line

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
_PICKLED = ("*.pt", "*.pth", "*.bin", "*.pkl", "*.ckpt")
RESAVE = "re-save it with sae.save_model(folder) (writes cfg.json + sae_weights.safetensors)"


def check_sae_folder(folder: Path) -> dict[str, Any]:
    """Raise one SaeevalError line unless `folder` holds a parseable cfg.json of a known architecture and a
    complete safetensors weights file; returns the parsed cfg.json."""
    cfg = _read_cfg(folder)
    _check_architecture(folder, cfg)
    _check_weights(folder)
    return cfg


def _read_cfg(folder: Path) -> dict[str, Any]:
    path = folder / CFG_FILE
    if not path.is_file():
        raise SaeevalError(
            f"SAE folder '{folder}' has no {CFG_FILE}: point saes.paths at folders written by sae.save_model()"
        )
    data = path.read_bytes()
    try:
        cfg = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise SaeevalError(
            f"SAE folder '{folder}': {CFG_FILE} is not UTF-8 text (byte {err.start}): {RESAVE}"
        ) from None
    except json.JSONDecodeError as err:
        raise SaeevalError(
            f"SAE folder '{folder}': {CFG_FILE} is not valid JSON ({err.msg} at line {err.lineno} column "
            f"{err.colno}): fix it or {RESAVE}"
        ) from None
    if not isinstance(cfg, dict):
        raise SaeevalError(
            f"SAE folder '{folder}': {CFG_FILE} holds a {type(cfg).__name__}, not an object of SAE settings: {RESAVE}"
        )
    return cfg


def _check_architecture(folder: Path, cfg: dict[str, Any]) -> None:
    from sae_lens.registry import SAE_CLASS_REGISTRY

    arch = cfg.get("architecture")
    if arch is not None and arch not in SAE_CLASS_REGISTRY:
        import difflib

        close = difflib.get_close_matches(str(arch), list(SAE_CLASS_REGISTRY), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise SaeevalError(
            f"SAE folder '{folder}': architecture '{arch}' is not one sae_lens knows ({hint}known: "
            f"{', '.join(sorted(SAE_CLASS_REGISTRY))}): fix cfg.json or register the class with "
            "sae_lens.register_sae_class before loading"
        )


def _check_weights(folder: Path) -> None:
    from safetensors import SafetensorError, safe_open

    path = folder / WEIGHTS_FILE
    if not path.is_file():
        pickled = sorted(p.name for pattern in _PICKLED for p in folder.glob(pattern))
        if pickled:
            raise SaeevalError(
                f"SAE folder '{folder}' holds pickled weights ({pickled[0]}), which saeeval never loads (unpickling "
                f"can run arbitrary code): load them where you trust the file and {RESAVE}"
            )
        raise SaeevalError(f"SAE folder '{folder}' has no {WEIGHTS_FILE}: {RESAVE}")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            for key in keys:
                f.get_slice(key).get_shape()
        _check_complete(path)
    except (SafetensorError, OSError, ValueError) as err:
        reason = first_line(err)
        raise SaeevalError(
            f"SAE folder '{folder}': {WEIGHTS_FILE} is not a complete safetensors file ({reason}; truncated or "
            f"another format): {RESAVE}"
        ) from None
    if not keys:
        raise SaeevalError(f"SAE folder '{folder}': {WEIGHTS_FILE} holds no tensors: {RESAVE}")


def _check_complete(path: Path) -> None:
    """The header's last data offset must equal the data size: a truncated download fails here, not later."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    size = path.stat().st_size - 8 - n
    if size < end:
        raise ValueError(f"{size} of {end} data bytes present")
