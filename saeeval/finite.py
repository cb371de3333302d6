"""Non-finite numbers, refused where they start: weights holding NaN/Inf at load; outputs that become NaN/Inf
during a run (finite weights that overflow, float16 activations) once the results are written.

Why: a NaN weight or output makes every number downstream NaN, and a run that reports them as null looks like
a run whose metrics do not apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from saeeval.errors import SaeevalError
from saeeval.metrics.non_finite import reconstruction_site


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


def _fix(site: str, name: str, entry: Mapping[str, Any]) -> str:
    if site.startswith(reconstruction_site("")):
        return "that SAE overflows on these activations: check the scale of its encoder (W_enc, b_enc) or leave it out"
    if name == "clean":
        return "the model itself overflows: run it in float32 (dtype=float32) or check its weights"
    if entry.get("saes") and not entry.get("ablation"):
        return ("its SAE outputs are finite but the blocks after them overflow: check the SAEs' output scale "
                "(l2_ratio) or run in float32 (dtype=float32)")
    return "the model overflows under this condition: run it in float32 (dtype=float32)"


def non_finite_error(doc: Mapping[str, Any], where: str) -> SaeevalError | None:
    """The run's one error line when a condition's outputs became non-finite (None when all are finite): the
    first such condition (clean first), the site where NaN/inf first appeared, how many positions, the others."""
    from saeeval.document import non_finite_conditions

    found = non_finite_conditions(doc)
    if not found:
        return None
    name, site, n = found[0]
    others = f" (also in {', '.join(repr(c) for c, _, _ in found[1:])})" if len(found) > 1 else ""
    return SaeevalError(
        f"condition {name!r} became non-finite at {site} ({n} positions){others}; its values are marked \"nan\" "
        f"in {where}: {_fix(site, name, doc['conditions'][name])}"
    )
