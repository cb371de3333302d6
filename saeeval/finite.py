"""Refuse weights that are not finite when they are loaded: a NaN or Inf weight makes every number downstream
NaN, and a run that reports them looks like a run whose metrics do not apply."""

from __future__ import annotations

import torch

from saeeval.errors import SaeevalError


def check_finite_weights(what: str, module: torch.nn.Module, fix: str) -> None:
    """Raise one SaeevalError line naming the first parameter of `module` holding NaN or Inf values."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.is_meta:
                continue
            bad = ~torch.isfinite(param)
            if bool(bad.any()):
                n_nan, n_bad = int(torch.isnan(param).sum()), int(bad.sum())
                raise SaeevalError(
                    f"{what} has non-finite weights: {name} holds {n_nan} NaN and {n_bad - n_nan} Inf of "
                    f"{param.numel()} values: {fix}"
                )
