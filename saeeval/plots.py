"""PNG charts of a run (headless matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def logit_diff_chart(doc: Mapping[str, Any], path: Path) -> Path | None:
    """Bar chart of mean logit diff per condition with 95% CI error bars; None when the task has no answers."""
    rows = [(n, c["task"]) for n, c in doc["conditions"].items() if c.get("task", {}).get("logit_diff") is not None]
    if not rows:
        return None
    names = [n for n, _ in rows]
    means = [t["logit_diff"] for _, t in rows]
    lows = [t["logit_diff_ci_low"] if t.get("logit_diff_ci_low") is not None else m for m, (_, t) in zip(means, rows)]
    highs = [t["logit_diff_ci_high"] if t.get("logit_diff_ci_high") is not None else m for m, (_, t) in zip(means, rows)]
    err = [[m - lo for m, lo in zip(means, lows)], [hi - m for m, hi in zip(means, highs)]]
    colors = ["tab:green" if n == "clean" else "tab:gray" if doc["conditions"][n].get("ablation") else "tab:blue"
              for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 1.5), 4.0))
    ax.bar(range(len(names)), means, yerr=err, capsize=4, color=colors)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("logit(correct) − logit(incorrect)")
    ax.set_title(f"{doc['task']['name']} · {doc['model']['name']}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
