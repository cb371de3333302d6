"""The one evaluation path, shared by `python -m saeeval` and `saeeval.evaluate`: build config nodes, plan the
conditions, run the SAEEvalModule under a Lightning Trainer, and build the results document.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from sae_lens import SAE

from saeeval.api.results import Results
from saeeval.engine.conditions import build_conditions
from saeeval.engine.masks import Masks, special_token_ids
from saeeval.engine.module import SAEEvalModule
from saeeval.engine.preflight import check_selection
from saeeval.errors import SaeevalError
from saeeval.features.options import FeatureAttribution
from saeeval.features.setup import feature_callback
from saeeval.results.document import build_document, describe_model, sample_records
from saeeval.tasks.base import TaskDataModule


def quiet_lightning() -> None:
    """Drop Lightning's start-up chatter (device lines, tips, a pytree deprecation) so the table stands out.

    Also its hint to prepend `srun` whenever SLURM is installed: saeeval's SLURM jobs go through submitit (which
    uses srun), and on a SLURM login node the hint would precede every local run's table or error line."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message="The `srun` command is available on your system but is not used")


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
        raise SaeevalError(
            f"could not build {node.get('_target_', 'a config node')}: {err}".replace("\n", " ")
        ) from err


def leave_process_group(trainer: L.Trainer) -> None:
    """Every rank meets once more, then leaves the process group: the metric states are synced, and ranks > 0
    exit right away. Left to interpreter teardown, a rank could exit while NCCL still owns the group (a hang if
    another rank is slow or fails). A run without a process group does nothing."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        trainer.strategy.barrier("saeeval: evaluated")
        torch.distributed.destroy_process_group()


def run_evaluation(
    model: Any,
    saes: Mapping[str, SAE],
    task: TaskDataModule,
    mask: Masks,
    splice: Mapping[str, Any],
    trainer: L.Trainer,
    config: Mapping[str, Any],
    features: FeatureAttribution | None = None,
    compat: str = "none",
) -> Results | None:
    """The one evaluation path (CLI and API): plan the conditions, test the module (with feature attribution as
    a callback on the same batches when `features` is given), build the document.
    Returns None on DDP ranks other than 0 (they only contributed metric states)."""
    conditions = build_conditions(saes, **splice)
    task.bind(model.tokenizer, model.cfg.default_prepend_bos, model.cfg.n_ctx)
    task.setup("test")
    check_selection(task, mask, special_token_ids(model.tokenizer), model.cfg.d_vocab)
    if task.answer_position is not None and task.answer_position not in task.position_names:
        raise SaeevalError(
            f"task {task.name!r} scores position {task.answer_position!r}, which is not one of its positions "
            f"{list(task.position_names)}; set answer_position to one of them"
        )
    module = SAEEvalModule(
        model,
        saes,
        conditions,
        mask,
        special_token_ids(model.tokenizer),
        task.has_answers,
        len(task.groups),
        answer_position=task.answer_position,
        compat=compat,
        generation=task.generation,
    )
    callback = None
    if features is not None:
        callback = feature_callback(
            features, saes, conditions, task, mask.splice, special_token_ids(model.tokenizer), trainer
        )
        # Lightning sets `trainer.callbacks` in its callback connector; the Trainer class does not declare it.
        trainer.callbacks.append(callback)  # type: ignore[attr-defined]
    try:
        trainer.test(module, datamodule=task, verbose=False)
    finally:
        if callback is not None:
            trainer.callbacks.remove(callback)  # type: ignore[attr-defined]
    leave_process_group(trainer)
    if not trainer.is_global_zero:
        return None
    computed = module.computed or []
    doc = build_document(
        config=config, model=describe_model(model), task=task, mask=mask.describe(compat), computed=computed
    )
    features_doc = None if callback is None else {**(callback.document or {}), "config_hash": doc["config_hash"]}
    return Results(doc, list(sample_records(task, computed)) if task.has_answers else None, features=features_doc)
