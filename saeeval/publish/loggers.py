"""Send a finished run's results to a Lightning logger (wandb, CSV): config, flat metrics, samples and chart
(and, for features=attribution runs, the top latents as wandb tables and the feature charts).

Evaluation has no training steps, so everything is logged once, after results.json is written, from rank 0
only (saeeval.cli.job returns before this on other ranks; Lightning's loggers are rank-zero-only as well).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from lightning.pytorch.loggers import Logger, WandbLogger

from saeeval.errors import SaeevalError, first_line
from saeeval.features.files import FAITHFULNESS_FILE, HEATMAP_FILE, read_features
from saeeval.publish.metric_keys import condition_key, feature_key, reconstruction_key, section_key
from saeeval.render.catalog import as_number
from saeeval.render.charts import CHART_FILE
from saeeval.results.schema import NAN, SAMPLES_FILE

SAMPLES_KEY = "samples"
CHART_KEY = "logit_diff_chart"
FEATURE_COLUMNS = [
    "feature",
    "attribution",
    "attribution_ci_low",
    "attribution_ci_high",
    "ablation_effect",
    "ablation_effect_ci_low",
    "ablation_effect_ci_high",
    "fire_rate",
]


def wandb_logger(**kwargs: Any) -> WandbLogger:
    """Lightning's `WandbLogger(**kwargs)` (kwargs it does not know go to `wandb.init`) with its run started now
    on rank 0 (other ranks get Lightning's dummy and never touch wandb), so a wandb problem such as online mode
    without an API key stops the evaluation before any compute, as one error line."""
    import wandb

    logger = WandbLogger(**kwargs)
    if logger._wandb_init.get("anonymous") is None:  # Lightning 2.6 always passes it; wandb 0.31 warns on any value
        logger._wandb_init.pop("anonymous", None)
    try:
        logger.experiment  # noqa: B018 -- the property starts the run
    except wandb.errors.Error as err:
        reason = first_line(err)
        raise SaeevalError(
            f"wandb could not start a run: {reason} (or use logger.mode=offline and upload later with `wandb sync`)"
        ) from err
    return logger


def _is_number(v: Any) -> bool:
    return v == NAN or isinstance(v, (int, float)) and not isinstance(v, bool)


def flat_metrics(doc: Mapping[str, Any]) -> dict[str, float]:
    """Every number of results.json under one key each: `<condition>/<group>/<metric>` (group task, lm or generation),
    `<condition>/reconstruction/<hook>/<metric>`, `slices/<slice>/<condition>/<metric>` and
    `gaps/<dimension>/<condition>/<metric>`; None and non-numeric values (e.g. a gap's lowest slice) are left out."""
    out: dict[str, float] = {}
    for cond, c in doc["conditions"].items():
        for group in ("task", "lm", "generation"):
            for k, v in (c.get(group) or {}).items():
                if _is_number(v):
                    out[condition_key(cond, group, k)] = as_number(v)
        for hook, r in (c.get("reconstruction") or {}).items():
            for k, v in r.items():
                if _is_number(v):
                    out[reconstruction_key(cond, hook, k)] = as_number(v)
    for section in ("slices", "gaps"):
        for part, per_cond in (doc.get(section) or {}).items():
            for cond, stats in per_cond.items():
                for k, v in stats.items():
                    if _is_number(v):
                        out[section_key(section, part, cond, k)] = as_number(v)
                    elif isinstance(v, Mapping):  # a slice's generation block
                        out.update(
                            {section_key(section, part, cond, f"{k}/{g}"): x for g, x in v.items() if _is_number(x)}
                        )
    return out


def logged_config(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved Hydra config at the top level (so `task._target_`, `model.name` filter runs as configured),
    plus what the run measured it on under `saeeval` (task name and size, model shape, config hash, versions)."""
    meta = {k: doc[k] for k in ("task", "model", "mask", "config_hash", "versions", "saeeval_version") if k in doc}
    return {**doc["config"], "saeeval": meta}


def samples_table(doc: Mapping[str, Any], out_dir: Path) -> tuple[list[str], list[list[Any]]] | None:
    """Columns and rows of samples.jsonl for a table: id, prompt, answer strings, each example field, then the
    logit difference under every condition (`logit_diff/<condition>`) and, when the run generated, the generated
    text (`generated/<condition>`); None when the task has no samples."""
    path = Path(out_dir) / SAMPLES_FILE
    if not path.exists():
        return None
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    conds = list(doc["conditions"])
    fields = list(dict.fromkeys(k for r in records for k in (r.get("fields") or {})))
    generated = [c for c in conds if any(c in (r.get("generation") or {}) for r in records)]
    columns = [
        "id",
        "prompt",
        "correct",
        "incorrect",
        *[f"fields/{f}" for f in fields],
        *[f"logit_diff/{c}" for c in conds],
        *[f"generated/{c}" for c in generated],
    ]
    rows = [
        [
            r["id"],
            r["prompt"],
            r.get("correct_str"),
            r.get("incorrect_str"),
            *[(r.get("fields") or {}).get(f) for f in fields],
            *[r["logit_diff"].get(c) for c in conds],
            *[((r.get("generation") or {}).get(c) or {}).get("text") for c in generated],
        ]
        for r in records
    ]
    return columns, rows


def feature_metrics(out_dir: Path) -> dict[str, float]:
    """The headline numbers of features.json (none without it): per SAE `features/<sae>/rank_correlation`,
    `.../top_ablation_effect` (of the top latent) and `.../fraction_kept@<k>` of the faithfulness curve."""
    doc = read_features(out_dir)
    out: dict[str, float] = {}
    for name, s in (doc or {}).get("saes", {}).items():
        values = {
            "rank_correlation": s.get("rank_correlation"),
            "top_ablation_effect": s["top"][0]["ablation_effect"] if s.get("top") else None,
            **{f"fraction_kept@{p['k']}": p.get("fraction_kept") for p in s.get("faithfulness", [])},
        }
        out.update({feature_key(name, k): v for k, v in values.items() if _is_number(v)})
    return out


def feature_tables(out_dir: Path) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """`features/<sae>` -> (FEATURE_COLUMNS, one row per top latent) from the run's features.json."""
    doc = read_features(out_dir) or {}
    return {
        feature_key(name): (
            FEATURE_COLUMNS,
            [
                [
                    t["feature"],
                    t["attribution"],
                    *t["attribution_ci"],
                    t["ablation_effect"],
                    *t["ablation_effect_ci"],
                    t["fire_rate"],
                ]
                for t in s["top"]
            ],
        )
        for name, s in doc.get("saes", {}).items()
    }


def log_results(logger: Logger, doc: Mapping[str, Any], out_dir: Path) -> None:
    """Log config and metrics to any Lightning logger; to wandb also the samples table and the chart, all in one
    history step, then finish the wandb run so its files are complete and no service process outlives it."""
    out_dir = Path(out_dir)
    try:
        logger.log_hyperparams(logged_config(doc))
        metrics: dict[str, Any] = {**flat_metrics(doc), **feature_metrics(out_dir)}
        if isinstance(logger, WandbLogger):
            metrics.update(_wandb_media(doc, out_dir))
        logger.log_metrics(metrics)
        logger.finalize("success")
    finally:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


def _wandb_media(doc: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    import wandb

    media: dict[str, Any] = {}
    if (table := samples_table(doc, out_dir)) is not None:
        columns, rows = table
        # wandb annotates `columns` as list[str | int] (an invariant list); str names are valid column keys
        media[SAMPLES_KEY] = wandb.Table(columns=cast("list[str | int]", columns), data=rows)
    if (chart := out_dir / CHART_FILE).exists():
        media[CHART_KEY] = wandb.Image(str(chart))
    for key, (columns, rows) in feature_tables(out_dir).items():
        media[key] = wandb.Table(columns=cast("list[str | int]", columns), data=rows)
    for name in (HEATMAP_FILE, FAITHFULNESS_FILE):
        if (chart := out_dir / name).exists():
            media[name.removesuffix(".png")] = wandb.Image(str(chart))
    return media
