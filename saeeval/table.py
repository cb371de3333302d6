"""The terminal summary: one row per condition, the numbers a researcher reads first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "—" if v is None else format(v, spec)


def results_table(doc: Mapping[str, Any]) -> Table:
    """Conditions × logit diff ± 95% CI, accuracy, recovered, CE delta, KL, explained variance and L0."""
    table = Table(title=f"saeeval · {doc['task']['name']} · {doc['model']['name']} · {doc['task']['n_examples']} examples")
    table.add_column("condition", no_wrap=True)
    for col in ("logit diff", "95% CI", "acc", "recovered", "CE", "ΔCE", "KL", "CE score", "EV", "L0"):
        table.add_column(col, justify="right", no_wrap=True)
    for name, c in doc["conditions"].items():
        task, lm = c.get("task", {}), c.get("lm", {})
        recon = list(c.get("reconstruction", {}).values())
        ld = task.get("logit_diff")
        ci = f"[{_fmt(task.get('logit_diff_ci_low'))}, {_fmt(task.get('logit_diff_ci_high'))}]" if ld is not None else "—"
        table.add_row(
            name, _fmt(ld), ci, _fmt(task.get("accuracy")), _fmt(task.get("logit_diff_recovered")), _fmt(lm.get("ce_loss")),
            _fmt(lm.get("ce_loss_delta"), "+.3f"), _fmt(lm.get("kl_div")), _fmt(lm.get("ce_loss_score")),
            " ".join(_fmt(r.get("explained_variance")) for r in recon) or "—",
            " ".join(_fmt(r.get("l0"), ".1f") for r in recon) or "—",
        )
    return table


def print_results(doc: Mapping[str, Any], console: Console | None = None) -> None:
    """Print the table; when stdout is not a terminal (logs, CI) use a wide page instead of rich's 80 columns."""
    console = console or Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(results_table(doc))
