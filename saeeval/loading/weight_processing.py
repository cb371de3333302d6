"""TransformerLens weight processing: how the model was loaded, and whether that is how the SAEs' model was.

An SAE sees the activations of the model it was trained on; `center_writing_weights` (and the other processing
flags) change those activations. SAE releases record the flags (`model_from_pretrained_kwargs`, e.g.
center_writing_weights=true for gpt2-small-res-jb). `load_model` records the flags it applied and `check_processing`
compares them, so a mismatch is one error line naming the saeeval override instead of silently skewed numbers.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import torch

from saeeval.errors import SaeevalError

PROCESSING_KEYS = (
    "fold_ln",
    "center_writing_weights",
    "center_unembed",
    "fold_value_biases",
    "refactor_factored_attn_matrices",
)

_FLAGS: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, bool]] = weakref.WeakKeyDictionary()


def record_processing(model: torch.nn.Module, flags: Mapping[str, Any]) -> None:
    """Remember which processing flags `model` was loaded with (unnamed flags were off)."""
    _FLAGS[model] = {k: bool(flags.get(k, False)) for k in PROCESSING_KEYS}


def processing_of(model: torch.nn.Module) -> dict[str, bool]:
    """The processing flags `model` was loaded with; a model built directly from a config has none on."""
    return dict(_FLAGS.get(model, {k: False for k in PROCESSING_KEYS}))


def check_processing(required: Mapping[str, Any] | None, model: Any, sae_name: str) -> None:
    """Raise a one-line SaeevalError when the SAE's `model_from_pretrained_kwargs` differ from the model's flags.

    Only the processing flags are compared; other loading arguments in the record (devices, ...) do not change
    the activations the SAE reads.
    """
    loaded = processing_of(model)
    wrong = [(k, bool(v)) for k, v in (required or {}).items() if k in loaded and loaded[k] != bool(v)]
    if not wrong:
        return
    want = ", ".join(f"{k}={str(v).lower()}" for k, v in wrong)
    have = ", ".join(f"{k}={str(not v).lower()}" for k, v in wrong)
    fix = " ".join(f"model.from_pretrained_kwargs.{k}={str(v).lower()}" for k, v in wrong)
    raise SaeevalError(
        f"SAE '{sae_name}' was trained on a model loaded with {want} but model '{model.cfg.model_name}' was loaded "
        f"with {have}: add {fix} (or saes.check_processing=false to evaluate the model as loaded)"
    )
