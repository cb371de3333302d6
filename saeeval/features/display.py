"""What a run shows of feature attribution: the heat-map and faithfulness figures and the rich table of top
latents, drawn from the features.json document alone, so a finished run folder can be re-drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from rich import box
from rich.console import Group
from rich.table import Table

from saeeval.render.catalog import fmt
from saeeval.render.charts import PALETTE

TABLE_ROWS = 10  # top latents per SAE in the terminal table
_HEATMAP_EXAMPLES = 120  # examples drawn per SAE (the first, by id), so cells stay visible
_HEATMAP_COLUMNS = 4  # SAE panels per row


def _where(doc: Mapping[str, Any]) -> str:
    pos = doc.get("positions")
    return f"at {', '.join(map(str, pos))}" if pos else "at every masked-in token"


def heatmap_figure(doc: Mapping[str, Any]) -> Figure | None:
    """Examples (rows) × top latents (columns) per SAE: the exact effect on the logit difference of ablating
    each latent alone, on a diverging scale centred at 0 (red: ablating it lowers LD); None without examples."""
    saes = [(n, s) for n, s in doc.get("saes", {}).items() if (s.get("examples") or {}).get("ablation_effect")]
    if not saes:
        return None
    grids = [
        np.array(
            [[np.nan if v is None else v for v in row] for row in s["examples"]["ablation_effect"][:_HEATMAP_EXAMPLES]],
            dtype=float,
        )
        for _, s in saes
    ]
    bound = max(float(np.nanmax(np.abs(g))) if np.isfinite(g).any() else 0.0 for g in grids) or 1.0
    cols = min(len(saes), _HEATMAP_COLUMNS)
    rows = -(-len(saes) // cols)
    fig = Figure(figsize=(4.2 * cols + 1.2, 5.6 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(saes) :]:
        ax.set_visible(False)
    im = None
    for ax, (name, s), grid in zip(axes, saes, grids, strict=True):
        im = ax.imshow(
            np.ma.masked_invalid(grid), cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto", interpolation="nearest"
        )
        feats = s["examples"]["features"]
        ax.set_xticks(range(len(feats)), [str(f) for f in feats], rotation=90, fontsize=6)
        ax.set_title(name, fontsize=8, loc="left")
        ax.set_xlabel("latent (by |attribution|)", fontsize=7)
    for ax in axes[::cols]:
        ax.set_ylabel(f"example (first {min(len(grids[0]), _HEATMAP_EXAMPLES)} by id)", fontsize=7)
    assert im is not None  # saes is not empty, so the loop drew one
    fig.colorbar(im, ax=list(axes[: len(saes)]), shrink=0.8, label="ΔLD when the latent is ablated")
    fig.suptitle(
        f"{doc.get('task')}: effect of ablating each top latent ({doc.get('baseline')} baseline, {_where(doc)})",
        fontsize=10,
        x=0.01,
        ha="left",
    )
    return fig


def faithfulness_figure(docs: Sequence[tuple[str, Mapping[str, Any]]]) -> Figure | None:
    """Fraction of the clean logit difference kept when the top-k latents are ablated together, per SAE
    (and run, for a comparison: `docs` holds (label, features.json) pairs); None when nothing was measured."""
    lines = [
        (f"{label} · {name}" if label else name, s["faithfulness"])
        for label, doc in docs
        for name, s in doc.get("saes", {}).items()
        if s.get("faithfulness")
    ]
    if not lines:
        return None
    fig = Figure(figsize=(8.0, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for i, (label, points) in enumerate(lines):
        pts = [(p["k"], p["fraction_kept"]) for p in points if p.get("fraction_kept") is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", color=PALETTE[i % len(PALETTE)], label=label[:60])
    ax.axhline(1, color="#2a7", linestyle="--", linewidth=1)
    ax.axhline(0, color="#222", linewidth=0.8)
    ax.set_xscale("log")
    ks = sorted({p["k"] for _, points in lines for p in points})
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("k: top latents (by |attribution|) ablated together")
    ax.set_ylabel("fraction of clean logit diff kept")
    ax.set_title("Faithfulness: logit diff left after ablating the top-k latents", fontsize=10, loc="left")
    ax.grid(color="#e4e4e4", linewidth=0.6)
    fig.legend(loc="outside lower center", ncols=2, fontsize=7, frameon=False)
    return fig


def _ci_text(ci: Sequence[float | None] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "—"
    return f"±{(ci[1] - ci[0]) / 2:.3g}"


def top_rows(s: Mapping[str, Any], n: int = TABLE_ROWS) -> list[tuple[Any, ...]]:
    """(latent, attribution, ±CI, ablation effect, ±CI, fire rate) of an SAE's first `n` top latents."""
    return [
        (
            t["feature"],
            t["attribution"],
            _ci_text(t["attribution_ci"]),
            t["ablation_effect"],
            _ci_text(t["ablation_effect_ci"]),
            t["fire_rate"],
        )
        for t in s["top"][:n]
    ]


TOP_HEAD = ("latent", "attribution", "95% CI", "ablation ΔLD", "95% CI", "fire rate")


def features_tables(doc: Mapping[str, Any]) -> Group:
    """One rich table per SAE: its top latents, then the rank correlation and the faithfulness curve."""
    tables = []
    for name, s in doc.get("saes", {}).items():
        title = f"features · {name} · {doc.get('method')} · {doc.get('baseline')} baseline · {_where(doc)}"
        curve = ", ".join(f"k={p['k']}: {fmt(p['fraction_kept'], '.2f')}" for p in s.get("faithfulness", []))
        caption = (
            f"rank correlation (Spearman) {fmt(s.get('rank_correlation'), '.2f')} · "
            f"live {s.get('n_live')}/{s.get('d_sae')} · LD kept after ablating top-k: {curve}"
        )
        if not any(t["attribution"] or t["ablation_effect"] for t in s["top"]):
            caption += " · no latent here moves the logit difference (the answer is not downstream of these positions)"
        table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for i, head in enumerate(TOP_HEAD):
            table.add_column(head, justify="left" if i == 0 else "right", no_wrap=True)
        for row in top_rows(s):
            table.add_row(
                *(
                    fmt(v, "+.4f")
                    if isinstance(v, float) and i in (1, 3)
                    else fmt(v, ".3f")
                    if isinstance(v, float)
                    else str(v)
                    for i, v in enumerate(row)
                )
            )
        tables.append(table)
    return Group(*tables)
