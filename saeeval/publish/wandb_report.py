"""The comparison as a wandb report: the same sections as the HTML page, as panels over the logged metric keys.

Runs log `<condition>/<group>/<metric>` (the names in saeeval.publish.metric_keys); the panels plot those keys
across the project's runs. Saving needs the wandb API (login + network), so the local HTML report stays the primary
output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from saeeval.errors import SaeevalError, first_line
from saeeval.features.display import TOP_HEAD, top_rows
from saeeval.features.files import read_features
from saeeval.publish.metric_keys import condition_key, feature_key, reconstruction_key, section_key
from saeeval.publish.runs import Run, by_task
from saeeval.render.catalog import fmt, metrics, present, reconstructions
from saeeval.render.charts import conditions_of, identity_slices

if TYPE_CHECKING:
    import wandb_workspaces.reports.v2 as wr

_MAX_SCATTERS = 6
_FEATURE_ROWS = 5  # top latents per run and SAE in the report's table


def _wr() -> Any:
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError:
        raise SaeevalError("--wandb-report needs the wandb-workspaces package: pip install wandb-workspaces") from None
    return wr


def parse_target(target: str) -> tuple[str, str]:
    """'ENTITY/PROJECT' → (entity, project)."""
    parts = target.split("/")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise SaeevalError(f"--wandb-report wants ENTITY/PROJECT (e.g. my-team/saeeval), got {target!r}")
    return parts[0].strip(), parts[1].strip()


def _md_cell(v: Any) -> str:
    return fmt(v).replace("|", "\\|")


def _md_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _summary_md(runs: Sequence[Run]) -> str:
    rows = []
    for r in runs:
        clean = ((r.doc["conditions"].get("clean") or {}).get("task")) or {}
        rows.append(
            (
                r.rid,
                r.label,
                r.doc["model"].get("name"),
                r.task,
                r.doc["task"].get("n_examples"),
                r.doc.get("config_hash"),
                clean.get("accuracy"),
            )
        )
    return (
        "Comparison of saeeval runs: what splicing each SAE into the model does to the task and to next-token "
        "loss.\n\n" + _md_table(("run", "label", "model", "task", "n examples", "config hash", "clean accuracy"), rows)
    )


def _recon_md(runs: Sequence[Run]) -> str:
    recons = [(r.rid, *rec) for r in runs for rec in reconstructions(r.doc["conditions"])]
    if not recons:
        return "No condition splices an SAE."
    decls = present(metrics("reconstruction"), [v for *_, v in recons])
    rows = [(rid, name, hook, *(m.value(v) for m in decls)) for rid, name, hook, v in recons]
    return _md_table(("run", "condition", "hook", *(m.label for m in decls)), rows)


def _features_md(runs: Sequence[Run]) -> str | None:
    """The top latents of each run and SAE that ran features=attribution (None when none did)."""
    found = [(r, doc) for r in runs if (doc := read_features(r.path)) is not None]
    if not found:
        return None
    rows = [
        (r.rid, name, s.get("rank_correlation"), *row)
        for r, doc in found
        for name, s in doc["saes"].items()
        for row in top_rows(s, _FEATURE_ROWS)
    ]
    return (
        "Latents ranked by |attribution| of the logit difference, with the exact effect of ablating each alone "
        "(95% CIs over examples).\n\n" + _md_table(("run", "SAE", "rank corr.", *TOP_HEAD), rows)
    )


def _runset_filter(runs: Sequence[Run]) -> str:
    """Only this task's runs: filter on the task's config target when all runs share one."""
    targets = {((r.doc.get("config") or {}).get("task") or {}).get("_target_") for r in runs}
    if len(targets) != 1 or None in targets:
        return ""
    return f"Config('task._target_') = '{targets.pop()}'"


def _hooks(runs: Sequence[Run], cond: str) -> list[str]:
    """The hooks a condition reconstructs, from the first run that has it."""
    for r in runs:
        if recon := (r.doc["conditions"].get(cond) or {}).get("reconstruction"):
            return list(recon)
    return []


def _panels(wr: Any, runs: Sequence[Run], task: str) -> list[Any]:
    conds = conditions_of(runs)

    def having(group: str, metric: str) -> list[str]:
        return [
            c
            for c in conds
            if any(((r.doc["conditions"].get(c) or {}).get(group) or {}).get(metric) is not None for r in runs)
        ]

    panels: list[Any] = []
    if ld := having("task", "logit_diff"):
        panels.append(
            wr.BarPlot(
                title=f"{task}: logit diff per condition", metrics=[condition_key(c, "task", "logit_diff") for c in ld]
            )
        )
    if rec := having("task", "logit_diff_recovered"):
        panels.append(
            wr.BarPlot(
                title=f"{task}: logit diff recovered",
                metrics=[condition_key(c, "task", "logit_diff_recovered") for c in rec],
            )
        )
    if ce := having("lm", "ce_loss_delta"):
        panels.append(
            wr.BarPlot(title=f"{task}: CE loss delta", metrics=[condition_key(c, "lm", "ce_loss_delta") for c in ce])
        )
    scatters = [(c, hooks[0]) for c in ce if len(hooks := _hooks(runs, c)) == 1]
    for cond, hook in scatters[:_MAX_SCATTERS]:
        panels.append(
            wr.ScatterPlot(
                title=f"{cond}: CE loss delta against L0",
                x=reconstruction_key(cond, hook, "l0"),
                y=condition_key(cond, "lm", "ce_loss_delta"),
            )
        )
    sae_names = list(dict.fromkeys(n for r in runs for n in ((read_features(r.path) or {}).get("saes") or {})))
    if sae_names:
        panels.append(
            wr.BarPlot(
                title=f"{task}: rank correlation of attribution and exact ablation effect",
                metrics=[feature_key(n, "rank_correlation") for n in sae_names],
            )
        )
    for sl in identity_slices(runs):
        panels.append(
            wr.BarPlot(
                title=f"{task}: accuracy on {sl}",
                metrics=[
                    section_key("slices", sl, c, "accuracy")
                    for c in conds
                    if any(c in (r.doc.get("slices") or {}).get(sl, {}) for r in runs)
                ],
            )
        )
    return panels


def wandb_report(runs: Sequence[Run], entity: str, project: str) -> wr.Report:
    """The Report object (not saved): title, summary, then per task a panel grid over the logged keys and tables."""
    wr = _wr()
    groups = by_task(runs)
    title = f"saeeval comparison: {', '.join(groups)}"[:128]
    blocks: list[Any] = [wr.H1(text=title), wr.MarkdownBlock(text=_summary_md(runs))]
    for task, task_runs in groups.items():
        blocks += [
            wr.H2(text=f"Task: {task}"),
            wr.PanelGrid(
                runsets=[wr.Runset(entity=entity, project=project, name=task, filters=_runset_filter(task_runs))],
                panels=_panels(wr, task_runs, task),
            ),
            wr.H3(text="Reconstruction"),
            wr.MarkdownBlock(text=_recon_md(task_runs)),
        ]
        if (features := _features_md(task_runs)) is not None:
            blocks += [wr.H3(text="Feature attribution"), wr.MarkdownBlock(text=features)]
    return wr.Report(
        entity=entity,
        project=project,
        title=title,
        description=f"{len(runs)} runs compared by python -m saeeval.report",
        blocks=blocks,
    )


def publish_wandb_report(runs: Sequence[Run], target: str) -> str:
    """Build and save the report to ENTITY/PROJECT; returns its URL."""
    entity, project = parse_target(target)
    report = wandb_report(runs, entity, project)
    try:
        report.save()
    except Exception as err:  # the wandb API raises many types (auth, network, GraphQL); all mean "not saved"
        first = first_line(err)
        raise SaeevalError(
            f"could not save the wandb report to {entity}/{project}: {first}; "
            "check `wandb login` and the network (the HTML report was still written)"
        ) from None
    return str(report.url)
