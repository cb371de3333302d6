"""Weights holding NaN/Inf are refused at load, naming the tensor (outputs that become non-finite during a run are
reported by saeeval.results.non_finite).

Why: a NaN weight makes every number downstream NaN, and a run that reports them as null looks like a run whose
metrics do not apply.
"""

from __future__ import annotations

import torch

from saeeval.errors import SaeevalError

CHECK_ELEMENTS = 1 << 22
"""Elements checked at once: isfinite makes a float temporary (|x|) of its input's size, which for a whole 256k
embedding was 1.3 GB at load."""


def _all_finite(param: torch.Tensor) -> bool:
    if param.ndim == 0:
        return bool(torch.isfinite(param))
    rows = max(1, CHECK_ELEMENTS // max(1, param[0].numel()))
    return all(bool(torch.isfinite(block).all()) for block in torch.split(param, rows))


def check_finite_weights(what: str, module: torch.nn.Module, fix: str) -> None:
    """Raise one SaeevalError line naming the first parameter of `module` holding NaN or Inf values."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.is_meta or _all_finite(param):
                continue
            bad = ~torch.isfinite(param)
            if bool(bad.any()):
                n_nan, n_bad = int(torch.isnan(param).sum()), int(bad.sum())
                raise SaeevalError(
                    f"{what} has non-finite weights: {name} holds {n_nan} NaN and {n_bad - n_nan} Inf of "
                    f"{param.numel()} values: {fix}"
                )
