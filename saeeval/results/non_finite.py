"""Outputs that became NaN/Inf during a run (finite weights that overflow, float16 activations): found in the
results document once it is written, and turned into the run's one error line with the likely fix.

The values themselves stay in the document, marked "nan" (saeeval.results.schema.NAN): they are the run's result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from saeeval.errors import SaeevalError
from saeeval.metrics.non_finite import reconstruction_site


def non_finite_conditions(doc: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """(condition, first site, positions there) for each condition of a results document whose outputs became
    non-finite, in the document's order (clean first): the site where NaN/inf first appeared in the forward."""
    found = []
    for name, c in doc["conditions"].items():
        sites = c.get("non_finite") or {}
        if sites:
            site, n = next(iter(sites.items()))
            found.append((name, site, n))
    return found


def _fix(site: str, name: str, entry: Mapping[str, Any]) -> str:
    if site.startswith(reconstruction_site("")):
        return "that SAE overflows on these activations: check the scale of its encoder (W_enc, b_enc) or leave it out"
    if name == "clean":
        return "the model itself overflows: run it in float32 (dtype=float32) or check its weights"
    if entry.get("saes") and not entry.get("ablation"):
        return (
            "its SAE outputs are finite but the blocks after them overflow: check the SAEs' output scale "
            "(l2_ratio) or run in float32 (dtype=float32)"
        )
    return "the model overflows under this condition: run it in float32 (dtype=float32)"


def non_finite_error(doc: Mapping[str, Any], where: str) -> SaeevalError | None:
    """The run's one error line when a condition's outputs became non-finite (None when all are finite): the
    first such condition (clean first), the site where NaN/inf first appeared, how many positions, the others."""
    found = non_finite_conditions(doc)
    if not found:
        return None
    name, site, n = found[0]
    others = f" (also in {', '.join(repr(c) for c, _, _ in found[1:])})" if len(found) > 1 else ""
    return SaeevalError(
        f'condition {name!r} became non-finite at {site} ({n} positions){others}; its values are marked "nan" '
        f"in {where}: {_fix(site, name, doc['conditions'][name])}"
    )
