"""Send a finished run's results to a Lightning logger (wandb, CSV): config, flat metrics, samples and chart."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger


def flat_metrics(doc: Mapping[str, Any]) -> dict[str, float]:
    """`<condition>/<group>/<metric>` (reconstruction: `<condition>/reconstruction/<hook>/<metric>`) and
    `slices/<slice>/<condition>/<metric>`; None values are left out."""
    out: dict[str, float] = {}
    for cond, c in doc["conditions"].items():
        for group in ("task", "lm"):
            for k, v in c.get(group, {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[f"{cond}/{group}/{k}"] = v
        for hook, r in c.get("reconstruction", {}).items():
            for k, v in r.items():
                if isinstance(v, (int, float)):
                    out[f"{cond}/reconstruction/{hook}/{k}"] = v
    for sl, per_cond in doc.get("slices", {}).items():
        for cond, stats in per_cond.items():
            for k, v in stats.items():
                if isinstance(v, (int, float)):
                    out[f"slices/{sl}/{cond}/{k}"] = v
    return out


def log_results(logger: Logger, doc: Mapping[str, Any], out_dir: Path) -> None:
    """Log the resolved config and every metric; for wandb also the samples table and the bar chart."""
    logger.log_hyperparams(dict(doc["config"]))
    logger.log_metrics(flat_metrics(doc))
    log_table = getattr(logger, "log_table", None)
    samples = Path(out_dir) / "samples.jsonl"
    if log_table is not None and samples.exists():
        import json

        rows = [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines()]
        conds = list(doc["conditions"])
        log_table(
            key="samples",
            columns=["id", "prompt", "correct", "incorrect", *[f"logit_diff/{c}" for c in conds]],
            data=[[r["id"], r["prompt"], r.get("correct"), r.get("incorrect"), *[r["logit_diff"].get(c) for c in conds]]
                  for r in rows],
        )
    chart = Path(out_dir) / "logit_diff.png"
    if hasattr(logger, "log_image") and chart.exists():
        logger.log_image(key="logit_diff", images=[str(chart)])
    logger.finalize("success")
