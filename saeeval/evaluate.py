"""One evaluation run from a composed Hydra config: build everything, test, write results."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from saeeval.errors import SaeevalError
from saeeval.masks import special_token_ids
from saeeval.module import CLEAN, SAEEvalModule
from saeeval.plots import logit_diff_chart
from saeeval.results import completed_hash, config_hash, results_document, write_results
from saeeval.selection import check_selection
from saeeval.splicing import build_conditions
from saeeval.table import print_results

TASKS_HINT = "add one, e.g. `python -m saeeval +task=toxicity` (tasks: toxicity, ioi, lm)"


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
        raise SaeevalError(f"could not build {node.get('_target_', 'a config node')}: {err}".replace("\n", " ")) from err


def evaluate(cfg: DictConfig, out_dir: Path) -> dict[str, Any] | None:
    """Run the configured evaluation into `out_dir`; returns the results document (None on non-zero ranks)."""
    if cfg.get("task") is None:
        raise SaeevalError(f"no task chosen: {TASKS_HINT}")
    config = OmegaConf.to_container(cfg, resolve=True)
    chash = config_hash(config)
    console = Console()
    found = None if cfg.force else completed_hash(out_dir)
    if found == chash:
        console.print(f"saeeval: {out_dir} already holds complete results for config {chash}; skipped (force=true reruns)")
        return None
    if found is not None:
        raise SaeevalError(
            f"{out_dir} holds complete results of another config ({found}, this one is {chash}); "
            "choose a new hydra.run.dir / hydra.sweep.dir, or pass force=true to replace them"
        )
    L.seed_everything(cfg.seed, verbose=False)
    quiet_lightning()

    logger = build(cfg.logger) if cfg.get("logger") else False
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger)
    _check_launch(trainer)
    if cfg.device == "auto":
        cfg.device = str(trainer.strategy.root_device)  # this rank's device: cuda:r under DDP, else cpu / cuda:0
    model = build(cfg.model)
    saes = build(cfg.saes)(model)
    conditions = build_conditions(saes, **cfg.splice)
    mask = build(cfg.mask)
    task = build(cfg.task)
    task.bind(model.tokenizer, model.cfg.default_prepend_bos, model.cfg.n_ctx)
    task.setup("test")
    check_selection(task, mask, special_token_ids(model.tokenizer), model.cfg.d_vocab)

    module = SAEEvalModule(
        model, saes, conditions, mask, special_token_ids(model.tokenizer), task.has_answers, len(task.groups)
    )
    trainer.test(module, datamodule=task, verbose=False)
    if not trainer.is_global_zero:
        _drop_empty_child_log()
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


def _check_launch(trainer: L.Trainer) -> None:
    """Refuse Lightning-launched DDP inside a multirun: Lightning re-runs the whole command line (`-m` included)
    for each extra rank, so the ranks would re-run the sweep in lock-step and can deadlock. Processes created
    by a scheduler (SLURM via hydra/launcher=submitit_slurm) are fine."""
    launcher = trainer.strategy.launcher
    spawns = (
        isinstance(launcher, _SubprocessScriptLauncher)
        and launcher.num_processes > 1
        and not trainer.strategy.cluster_environment.creates_processes_externally
    )
    if spawns and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise SaeevalError(
            f"trainer.devices={trainer.num_devices} with strategy=ddp cannot run inside a local multirun (-m); "
            "sweep with devices=1 per job, use hydra/launcher=submitit_slurm, or run each point without -m"
        )


def _drop_empty_child_log() -> None:
    """Lightning runs rank r > 0 as the Hydra job `train_ddp_process_<r>` in rank 0's folder; remove that job's
    log file when nothing was logged to it, so only rank 0 leaves files there."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        path = Path(getattr(handler, "baseFilename", ""))
        if isinstance(handler, logging.FileHandler) and path.name.startswith("train_ddp_process_"):
            root.removeHandler(handler)
            handler.close()
            if path.exists() and path.stat().st_size == 0:
                path.unlink()


def _samples(task: Any, computed: dict[str, Any]):
    """One record per example (ordered by id) with its logit diff under every condition."""
    per_cond = computed["samples"]
    ids = per_cond[CLEAN][0].tolist()
    values = {name: vals.tolist() for name, (_, vals) in per_cond.items()}
    for row, i in enumerate(ids):
        rec = task.example_record(i)
        rec["logit_diff"] = {name: v[row] for name, v in values.items()}
        yield rec
