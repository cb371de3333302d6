"""features.json from the synced states: top latents with CIs, faithfulness curve, rank correlation, slices.

The callback only feeds states; every reported number is shaped here (NaN becomes null, as in results.json).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from saeeval.features.metrics import ExampleRows, FireCounts, GroupedSums
from saeeval.features.options import FeatureAttribution
from saeeval.results.document import json_number

FEATURES_SCHEMA = 1


@dataclass
class SaeStates:
    """One attributed SAE's states; `top` and `edits` (latent sets: each top latent alone, the top-k prefixes
    of `faithfulness_ks`, then all latents) are chosen at the end of pass 1, `effects`/`rows` filled in pass 2."""

    hook: str
    d_sae: int
    attribution: GroupedSums
    fires: FireCounts
    top: list[int] = field(default_factory=list)
    edits: list[list[int]] = field(default_factory=list)
    effects: GroupedSums | None = None
    rows: ExampleRows | None = None


def faithfulness_ks(top_k: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... below `top_k`, then `top_k` itself."""
    ks: list[int]
    ks, scale = [], 1
    while True:
        for m in (1, 2, 5):
            if m * scale >= top_k:
                return [*ks, top_k]
            ks.append(m * scale)
        scale *= 10


def _ranks(x: Tensor) -> Tensor:
    """Ranks 1..n with ties given their average rank."""
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, len(x) + 1, dtype=x.dtype)
    for v in torch.unique(x):
        tied = x == v
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: Sequence[float | None], b: Sequence[float | None]) -> float | None:
    """Spearman's rank correlation of the pairs where both are defined; None with fewer than 3 or no spread."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if len(pairs) < 3:
        return None
    ra, rb = (_ranks(torch.tensor(v, dtype=torch.float64)) for v in zip(*pairs, strict=True))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return json_number(float(ra @ rb) / denom) if denom > 0 else None


def _float32(v: float) -> float | None:
    """A per-example value at the float32 precision it was computed in (7 significant digits): the per-example
    rows are most of features.json."""
    n = json_number(v)
    return None if n is None else float(f"{n:.7g}")


def _ci(stats: Mapping[str, Tensor], i: int) -> list[float | None]:
    return [json_number(stats["ci_low"][i]), json_number(stats["ci_high"][i])]


def _fraction(value: float | None, clean: float | None) -> float | None:
    if value is None or clean is None or abs(clean) < 1e-8:
        return None
    return json_number(value / clean)


def _slice_values(task: Any) -> dict[str, dict[str, list[int]]]:
    """Slice field -> value -> the task groups holding it (toxicity: identity and label; IOI: order)."""
    out: dict[str, dict[str, list[int]]] = {}
    for fld in task.slice_fields:
        for i, g in enumerate(task.groups):
            out.setdefault(fld, {}).setdefault(g[fld], []).append(i)
    return out


def _top_entries(st: SaeStates, slices: Mapping[str, Mapping[str, list[int]]]) -> list[dict[str, Any]]:
    attr = st.attribution.pooled()
    eff = st.effects.pooled() if st.effects is not None else None
    fire = st.fires.compute()["rate"]
    per_slice = {
        (f, v): (st.attribution.pooled(idx), st.effects.pooled(idx) if st.effects is not None else None)
        for f, values in slices.items()
        for v, idx in values.items()
    }
    entries = []
    for k, j in enumerate(st.top):
        entry: dict[str, Any] = {
            "feature": j,
            "attribution": json_number(attr["mean"][j]),
            "attribution_ci": _ci(attr, j),
            "ablation_effect": json_number(eff["mean"][k]) if eff else None,
            "ablation_effect_ci": _ci(eff, k) if eff else [None, None],
            "fire_rate": json_number(fire[j]),
            "slices": {},
        }
        for (f, v), (sa, se) in per_slice.items():
            entry["slices"][f"{f}={v}"] = {
                "attribution": json_number(sa["mean"][j]),
                "attribution_ci": _ci(sa, j),
                "ablation_effect": json_number(se["mean"][k]) if se else None,
                "ablation_effect_ci": _ci(se, k) if se else [None, None],
                "n": int(sa["n"]),
            }
        entries.append(entry)
    return entries


def _differing(st: SaeStates, values: Mapping[str, list[int]], n: int) -> list[dict[str, Any]]:
    """The `n` latents whose mean attribution spreads most across one field's values, with a 95% CI of the
    difference between the highest and lowest value (independent samples)."""
    if len(values) < 2 or n == 0:
        return []
    stats = {v: st.attribution.pooled(idx) for v, idx in values.items()}
    means = torch.stack([s["mean"] for s in stats.values()]).nan_to_num(0.0)
    spread = means.max(0).values - means.min(0).values
    names = list(stats)
    out = []
    for j in torch.argsort(spread, descending=True, stable=True)[:n].tolist():
        hi, lo = names[int(means[:, j].argmax())], names[int(means[:, j].argmin())]
        se = float((stats[hi]["stderr"][j] ** 2 + stats[lo]["stderr"][j] ** 2).sqrt())
        gap = float(spread[j])
        out.append(
            {
                "feature": j,
                "spread": json_number(gap),
                "spread_ci": [json_number(gap - 1.96 * se), json_number(gap + 1.96 * se)],
                "highest": hi,
                "lowest": lo,
                "values": {
                    v: {"attribution": json_number(s["mean"][j]), "attribution_ci": _ci(s, j), "n": int(s["n"])}
                    for v, s in stats.items()
                },
            }
        )
    return out


def sae_entry(st: SaeStates, clean_ld: float | None, task: Any, n_differing: int) -> dict[str, Any]:
    """One SAE's part of features.json."""
    slices = _slice_values(task)
    top = _top_entries(st, slices)
    eff = st.effects.pooled() if st.effects is not None else None
    n_top = len(st.top)
    faith = []
    for e, latents in enumerate(st.edits[n_top:-1], start=n_top):
        mean = json_number(eff["mean"][e]) if eff else None
        ld = None if mean is None or clean_ld is None else clean_ld + mean
        faith.append(
            {
                "k": len(latents),
                "logit_diff": ld,
                "effect": mean,
                "effect_ci": _ci(eff, e) if eff else None,
                "fraction_kept": _fraction(ld, clean_ld),
            }
        )
    attr_mean = st.attribution.pooled()["mean"]
    fires = st.fires.compute()
    ids, rows = st.rows.compute() if st.rows is not None else (torch.empty(0), torch.empty(0, 0))
    return {
        "hook": st.hook,
        "d_sae": st.d_sae,
        "n_positions": int(fires["n"]),
        "n_live": int((fires["rate"] > 0).sum()),
        "attribution_total": json_number(attr_mean.nansum()),
        "all_latents_effect": json_number(eff["mean"][-1]) if eff else None,
        "all_latents_effect_ci": _ci(eff, len(st.edits) - 1) if eff else None,
        "top": top,
        "faithfulness": faith,
        "rank_correlation": spearman([t["attribution"] for t in top], [t["ablation_effect"] for t in top]),
        "differing": {f: _differing(st, values, n_differing) for f, values in slices.items() if len(values) > 1},
        "examples": {
            "ids": [int(i) for i in ids],
            "features": list(st.top),
            "ablation_effect": [[_float32(v) for v in row] for row in rows.tolist()],
        },
    }


def summarize(
    options: FeatureAttribution,
    positions: Mapping[str, Any],
    task: Any,
    clean_ld: GroupedSums,
    states: Mapping[str, SaeStates],
) -> dict[str, Any]:
    """The features.json document (README: "features.json")."""
    clean = clean_ld.pooled()
    clean_mean = json_number(clean["mean"][0])
    return {
        "schema_version": FEATURES_SCHEMA,
        **options.describe(),
        **positions,
        "task": task.name,
        "n_examples": int(clean["n"]),
        "clean_logit_diff": clean_mean,
        "saes": {name: sae_entry(st, clean_mean, task, options.n_differing) for name, st in states.items()},
    }
