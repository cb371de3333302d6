"""`python -m saeeval`: one evaluation run from a composed Hydra config, a thin layer over saeeval.api.evaluate.

It builds the model, SAEs, task, mask, logger and trainer from the config, runs `api.run_evaluation` (the path
`saeeval.evaluate` runs too), and writes the run's files: results.json, samples.jsonl, the chart, the logger's
records and the table; with features=attribution also features.json, its two charts and its table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from saeeval.api.evaluate import build, quiet_lightning, run_evaluation
from saeeval.api.results import Results
from saeeval.errors import SaeevalError
from saeeval.features.files import FEATURES_FILE
from saeeval.features.setup import trainer_kwargs
from saeeval.render.charts import CHART_FILE, save_figure
from saeeval.render.table import print_results
from saeeval.results.config_hash import config_hash
from saeeval.results.files import completed_hash
from saeeval.results.non_finite import non_finite_error
from saeeval.results.schema import RESULTS_FILE

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

TASKS_HINT = "add one, e.g. `python -m saeeval +task=toxicity` (tasks: toxicity, ioi, lm)"


def run_config(cfg: DictConfig, out_dir: Path) -> Results | None:
    """Run the configured evaluation into `out_dir`; returns its Results (None when skipped and on ranks > 0)."""
    if cfg.get("task") is None:
        raise SaeevalError(f"no task chosen: {TASKS_HINT}")
    config = cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=True))  # a DictConfig gives a dict
    chash = config_hash(config)
    console = Console()
    found = None if cfg.force else completed_hash(out_dir)
    if found == chash:
        console.print(
            f"saeeval: {out_dir} already holds complete results for config {chash}; skipped (force=true reruns)"
        )
        return None
    if found is not None:
        raise SaeevalError(
            f"{out_dir} holds complete results of another config ({found}, this one is {chash}); "
            "choose a new hydra.run.dir / hydra.sweep.dir, or pass force=true to replace them"
        )
    L.seed_everything(cfg.seed, verbose=False)
    quiet_lightning()

    logger: Logger | Literal[False] = build(cfg.logger) if cfg.get("logger") else False
    features = build(cfg.features) if cfg.get("features") else None
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, **trainer_kwargs(features))
    _check_launch(trainer)
    if cfg.device == "auto":
        cfg.device = str(trainer.strategy.root_device)  # this rank's device: cuda:r under DDP, else cpu / cuda:0
    model = build(cfg.model)
    saes = build(cfg.saes)(model)
    mask = build(cfg.mask)
    task = build(cfg.task)
    results = run_evaluation(model, saes, task, mask, cfg.splice, trainer, config, features, compat=cfg.compat)
    if results is None:
        _drop_empty_child_log()
        return None
    results.save(out_dir)
    if cfg.plot and (fig := results.plot()) is not None:
        save_figure(fig, out_dir / CHART_FILE)
    if cfg.plot:
        for name, fig in results.feature_plots().items():
            save_figure(fig, out_dir / name)
    if logger:
        from saeeval.publish.loggers import log_results

        log_results(logger, results.document, out_dir)
    print_results(results.document, console)
    if results.features is not None:
        console.print(results.feature_table())
        console.print(f"features: {out_dir / FEATURES_FILE}")
    console.print(f"results: {out_dir / RESULTS_FILE}")
    if (err := non_finite_error(results.document, str(out_dir / RESULTS_FILE))) is not None:
        raise err  # after every file is written: the NaN marks are the run's result, the exit status says so
    return results


def _check_launch(trainer: L.Trainer) -> None:
    """Refuse Lightning-launched DDP inside a multirun: Lightning re-runs the whole command line (`-m` included)
    for each extra rank, so the ranks would re-run the sweep in lock-step and can deadlock. Processes created
    by a scheduler (SLURM via hydra/launcher=submitit_slurm) are fine."""
    launcher = trainer.strategy.launcher
    spawns = (
        isinstance(launcher, _SubprocessScriptLauncher)
        and launcher.num_processes > 1
        # a _SubprocessScriptLauncher comes only from a ParallelStrategy (DDP, FSDP): it has a cluster_environment
        and not trainer.strategy.cluster_environment.creates_processes_externally  # type: ignore[attr-defined]
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
