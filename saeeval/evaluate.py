"""One evaluation run from a composed Hydra config: build everything, test, write results."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from saeeval.errors import SaeevalError
from saeeval.masks import special_token_ids
from saeeval.module import CLEAN, SAEEvalModule
from saeeval.plots import logit_diff_chart
from saeeval.results import config_hash, is_complete, results_document, write_results
from saeeval.splicing import build_conditions
from saeeval.table import print_results

TASKS_HINT = "add one, e.g. `python -m saeeval +task=toxicity` (tasks: toxicity, ioi, lm)"


def quiet_lightning() -> None:
    """Drop Lightning's start-up chatter (device lines, tips, a pytree deprecation) so the table stands out."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def build(node: Any) -> Any:
    """`hydra.utils.instantiate`, but a SaeevalError raised inside comes out as itself (one line, no traceback)."""
    try:
        return instantiate(node)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, SaeevalError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise SaeevalError(f"could not build {node.get('_target_', 'a config node')}: {err}".replace("\n", " ")) from err


def evaluate(cfg: DictConfig, out_dir: Path) -> dict[str, Any] | None:
    """Run the configured evaluation into `out_dir`; returns the results document (None on non-zero ranks)."""
    if cfg.get("task") is None:
        raise SaeevalError(f"no task chosen: {TASKS_HINT}")
    config = OmegaConf.to_container(cfg, resolve=True)
    chash = config_hash(config)
    console = Console()
    if not cfg.force and is_complete(out_dir, chash):
        console.print(f"saeeval: {out_dir} already holds complete results for config {chash}; skipped (force=true reruns)")
        return None
    L.seed_everything(cfg.seed, verbose=False)
    quiet_lightning()

    model = build(cfg.model)
    saes = build(cfg.saes)(model)
    conditions = build_conditions(saes, **cfg.splice)
    mask = build(cfg.mask)
    task = build(cfg.task)
    task.bind(model.tokenizer, model.cfg.default_prepend_bos, model.cfg.n_ctx)
    task.setup("test")

    module = SAEEvalModule(
        model, saes, conditions, mask, special_token_ids(model.tokenizer), task.has_answers, len(task.groups)
    )
    logger = build(cfg.logger) if cfg.get("logger") else False
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger)
    trainer.test(module, datamodule=task, verbose=False)
    if not trainer.is_global_zero:
        return None

    computed = module.results
    doc = results_document(
        config=config,
        model={"name": model.cfg.model_name, "n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model,
               "d_vocab": model.cfg.d_vocab},
        task=task.describe(),
        mask=mask.describe(),
        computed=computed,
    )
    samples = _samples(task, computed) if task.has_answers else None
    write_results(out_dir, doc, samples)
    if cfg.plot:
        logit_diff_chart(doc, out_dir / "logit_diff.png")
    if logger:
        from saeeval.loggers import log_results

        log_results(logger, doc, out_dir)
    print_results(doc, console)
    console.print(f"results: {out_dir / 'results.json'}")
    return doc


def _samples(task: Any, computed: dict[str, Any]):
    """One record per example (ordered by id) with its logit diff under every condition."""
    per_cond = computed["samples"]
    ids = per_cond[CLEAN][0].tolist()
    values = {name: vals.tolist() for name, (_, vals) in per_cond.items()}
    for row, i in enumerate(ids):
        rec = task.example_record(i)
        rec["logit_diff"] = {name: v[row] for name, v in values.items()}
        yield rec
