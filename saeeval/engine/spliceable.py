"""Which SAEs can be spliced into a model as they are: the one place for these rules.

`HookedSAETransformer.add_sae` only warns on a wrong hook name, and a wrong width fails deep inside a forward pass,
so every SAE is checked first: it names a hook the model has, reads all heads, writes back where it reads (no
transcoders yet), its d_in is the activation's width there, and it sits on the model's device in its dtype. The
loaders run every check (saeeval.loading.saes.validate_saes); the Splicer re-checks the structure of what it is
handed.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

import torch
from sae_lens import SAE
from sae_lens.util import dtype_to_str

from saeeval.errors import SaeevalError
from saeeval.hooknames import sae_hook


def check_structure(name: str, sae: SAE, model: Any) -> None:
    """The checks that need no forward pass: the SAE names a hook the model has, reads all heads, and writes back
    where it reads (an SAE, not a transcoder)."""
    hook = sae_hook(sae)
    if hook is None:
        raise SaeevalError(f"SAE '{name}' has no hook name: set cfg.metadata.hook_name to a hook of the model")
    if hook not in model.hook_dict:
        close = difflib.get_close_matches(hook, list(model.hook_dict), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else f"e.g. {_example_hooks(model)}"
        raise SaeevalError(
            f"SAE '{name}' hook '{hook}' is not a hook of model '{model.cfg.model_name}' ({hint}): use an SAE "
            "trained on this model or fix its metadata.hook_name"
        )
    if sae.cfg.metadata.hook_head_index is not None:
        raise SaeevalError(f"SAE {name!r} reads one attention head; only all-heads hook_z SAEs are supported")
    out = sae.cfg.metadata.hook_name_out
    if out is not None and out != hook:
        raise SaeevalError(f"SAE {name!r} is a transcoder ({hook} -> {out}); only SAEs are supported")


def check_spliceable(saes: Mapping[str, SAE], model: Any) -> None:
    """Raise a one-line SaeevalError unless every SAE can be spliced into `model` as it is: its structure, its
    d_in against the activation's width (one shared 1-token forward pass), and its device and dtype."""
    for name, sae in saes.items():
        check_structure(name, sae, model)
    shapes = _activation_shapes(model, [sae_hook(s) for s in saes.values()])
    for name, sae in saes.items():
        _check_width_and_placement(name, sae, model, shapes[sae_hook(sae)])


def _check_width_and_placement(name: str, sae: SAE, model: Any, shape: torch.Size) -> None:
    hook = sae_hook(sae)
    width = math.prod(shape[-2:]) if sae.cfg.reshape_activations == "hook_z" else shape[-1]
    if sae.cfg.d_in != width:
        raise SaeevalError(
            f"SAE '{name}' at hook '{hook}' has d_in={sae.cfg.d_in} but model '{model.cfg.model_name}' has width "
            f"{width} there (activation shape {tuple(shape[2:])} per token): use an SAE trained on this model"
        )
    sae_param = next(sae.parameters())
    device = model_device(model)
    wrong_device = not _same_device(sae_param.device, device)
    wrong_dtype = sae_param.dtype != model.cfg.dtype or sae.dtype != model.cfg.dtype
    if wrong_device or wrong_dtype:
        raise SaeevalError(
            f"SAE '{name}' at hook '{hook}' is {dtype_to_str(sae_param.dtype)} on {sae_param.device} but the model "
            f"is {dtype_to_str(model.cfg.dtype)} on {device}: call sae.to(device='{device}', "
            f"dtype=torch.{dtype_to_str(model.cfg.dtype)}) before splicing"
        )


def _activation_shapes(model: Any, hooks: list[str]) -> dict[str, torch.Size]:
    """Shapes of the activations at `hooks` on a single token: robust for every hook type."""
    if not hooks:
        return {}
    wanted = set(hooks)
    tokens = torch.zeros((1, 1), dtype=torch.long, device=model_device(model))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in wanted, return_type=None)
    return {hook: cache[hook].shape for hook in wanted}


def _example_hooks(model: Any) -> str:
    return ", ".join(h for h in ("blocks.0.hook_resid_post", "blocks.0.attn.hook_z") if h in model.hook_dict)


def model_device(model: Any) -> torch.device:
    """Where the model's weights are (its first parameter's device)."""
    return next(model.parameters()).device


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)
