"""`saeeval.evaluate(model, saes, task=...)`: the evaluation for a model and SAEs already in memory (notebooks).

It runs the same path as `python -m saeeval` (`run_evaluation`: the SAEEvalModule under a Lightning Trainer,
then saeeval.document), with the same options and defaults, read from the same Hydra config tree, and leaves
the model and SAEs as it found them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from sae_lens import SAE

from saeeval.conditions import build_conditions
from saeeval.document import build_document, describe_model, sample_records
from saeeval.errors import SaeevalError
from saeeval.features.options import FeatureAttribution
from saeeval.features.setup import feature_callback, trainer_kwargs
from saeeval.masks import Masks, special_token_ids
from saeeval.finite import non_finite_error
from saeeval.module import SAEEvalModule
from saeeval.run_results import Results
from saeeval.saes import sae_hook, validate_saes
from saeeval.selection import check_selection
from saeeval.tasks.base import TaskDataModule

SPLICE_KNOBS = ("singles", "groups", "ablation", "use_error_term")
IN_MEMORY = ("model", "saes", "task", "logger", "hydra")  # given as objects, not chosen from the config tree
FILE_OPTIONS = ("force", "plot")  # skip finished runs, write the PNG: the CLI's files, not in memory
CLI_ONLY = (*FILE_OPTIONS, "device", "dtype")  # the model given in memory says where and in what it runs


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


@contextmanager
def left_as_found(modules: Sequence[torch.nn.Module], converts_weights: bool = False) -> Iterator[None]:
    """Restore what evaluating may change on the caller's modules: requires_grad, train/eval mode, device,
    dtype and the device/dtype bookkeeping of TransformerLens (`cfg`) and sae_lens (`SAE.device/dtype`).
    `converts_weights`: the trainer's precision casts the weights, so a copy is kept to put back bit for bit."""
    grads = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    modes = [(sub, sub.training) for m in modules for sub in m.modules()]
    placed = [(m, next(m.parameters()).device, next(m.parameters()).dtype, _bookkeeping(m)) for m in modules
              if any(True for _ in m.parameters())]
    saved = [{k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()} for m in modules] \
        if converts_weights else None
    try:
        yield
    finally:
        for m, device, dtype, books in placed:
            param = next(m.parameters())
            if param.device != device or param.dtype != dtype:
                torch.nn.Module.to(m, device=device, dtype=dtype)
            for owner, attr, value in books:
                setattr(owner, attr, value)
        if saved is not None:
            for m, state in zip(modules, saved):
                m.load_state_dict(state)
        for p, flag in grads:
            p.requires_grad_(flag)
        for sub, flag in modes:
            sub.train(flag)


def _bookkeeping(module: torch.nn.Module) -> list[tuple[Any, str, Any]]:
    """(owner, attribute, value) of the device/dtype records TransformerLens and sae_lens route inputs by."""
    owners = [o for o in (getattr(module, "cfg", None), module) if o is not None]
    return [(o, attr, getattr(o, attr)) for o in owners for attr in ("device", "dtype")
            if attr in getattr(o, "__dict__", {})]


def run_evaluation(
    model: Any, saes: Mapping[str, SAE], task: TaskDataModule, mask: Masks, splice: Mapping[str, Any],
    trainer: L.Trainer, config: Mapping[str, Any], features: FeatureAttribution | None = None,
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
        model, saes, conditions, mask, special_token_ids(model.tokenizer), task.has_answers, len(task.groups),
        answer_position=task.answer_position, compat=compat, generation=task.generation,
    )
    callback = None
    if features is not None:
        callback = feature_callback(features, saes, conditions, task, mask.splice, special_token_ids(model.tokenizer),
                                   trainer)
        trainer.callbacks.append(callback)
    try:
        trainer.test(module, datamodule=task, verbose=False)
    finally:
        if callback is not None:
            trainer.callbacks.remove(callback)
    if not trainer.is_global_zero:
        return None
    computed = module.computed or []
    doc = build_document(config=config, model=describe_model(model), task=task, mask=mask.describe(compat),
                         computed=computed)
    features_doc = None if callback is None else {**(callback.document or {}), "config_hash": doc["config_hash"]}
    return Results(doc, list(sample_records(task, computed)) if task.has_answers else None, features=features_doc)


def named_saes(saes: Mapping[str, SAE] | Sequence[SAE]) -> dict[str, SAE]:
    """A dict of SAEs as given, or a list keyed by hook name (a second SAE at one hook gets `__2`, ...)."""
    if isinstance(saes, Mapping):
        return dict(saes)
    out: dict[str, SAE] = {}
    for sae in saes:
        if not isinstance(sae, SAE):
            raise SaeevalError(f"saes holds a {type(sae).__name__}; pass sae_lens SAE objects (a list or a dict)")
        name, k = sae_hook(sae), 2
        while name in out:
            name, k = f"{sae_hook(sae)}__{k}", k + 1
        out[name] = sae
    return out


def config_groups() -> list[str]:
    """The config groups of the CLI's tree (conf/<group>/ folders: mask, splice, trainer, ...)."""
    from importlib.resources import files

    return sorted(p.name for p in files("saeeval.conf").iterdir() if p.is_dir() and not p.name.startswith("_"))


@contextmanager
def _config_tree() -> Iterator[None]:
    """Hydra's compose API on saeeval's config tree, also from inside a running Hydra app (its global state is
    put back afterwards)."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("saeeval.conf", version_base="1.3"):
            yield
    finally:
        if outer is not None:
            GlobalHydra.instance().initialize(outer)


def compose_config(task: str | None, options: Mapping[str, Any]) -> DictConfig:
    """The CLI's config (`conf/`, same defaults) with `options` applied: a config group's choice by name
    (mask="answer", splice="each_layer") or its keys as a dict, nested ones too (mask={"positions": ["END"]},
    mask={"score": {"positions": ["END"]}}), splice knobs
    (groups=..., ablation=...), top-level keys (limit, batch_size, seed, ...), then task or mask keys
    (n_examples=..., positions=[...])."""
    from hydra import compose

    groups = [g for g in config_groups() if g not in IN_MEMORY]
    choices = {k: v for k, v in options.items() if k in groups and isinstance(v, str)}
    if isinstance(options.get("features"), Mapping):
        choices["features"] = "attribution"  # its keys as a dict: attribution with those options
    overrides = [f"+task={task}"] if task else []
    overrides += [f"{k}={v}" for k, v in choices.items()]
    with _config_tree():
        cfg = compose("config", overrides=overrides)
    for key, value in options.items():
        if key in choices and isinstance(value, str):
            continue
        if key in groups and isinstance(value, Mapping):
            for sub, v in _dotted(value):
                _set(cfg, f"{key}.{sub}", v)
        elif key in SPLICE_KNOBS:
            _set(cfg, f"splice.{key}", value)
        elif key in cfg and not OmegaConf.is_dict(cfg[key]) and key not in CLI_ONLY:
            _set(cfg, key, value)
        elif task and key in cfg.task:
            _set(cfg, f"task.{key}", value)
        elif key in cfg.mask:
            _set(cfg, f"mask.{key}", value)
        else:
            known = [k for k in cfg if not OmegaConf.is_dict(cfg[k]) and k not in CLI_ONLY]
            known += [*SPLICE_KNOBS, *groups, *(cfg.task if task else ())]
            known = [k for k in known if not k.startswith("_")]
            raise SaeevalError(f"unknown option {key}=...; saeeval.evaluate takes {', '.join(sorted(set(known)))}")
    return cfg


def _dotted(options: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested option dicts as dotted keys (`{"splice": {"positions": [...]}}` -> `splice.positions`), so a
    nested node keeps its other keys and its `_target_`."""
    out: list[tuple[str, Any]] = []
    for key, value in options.items():
        if isinstance(value, Mapping):
            out += _dotted(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _set(cfg: DictConfig, key: str, value: Any) -> None:
    OmegaConf.update(cfg, key, value, merge=False)


def evaluate(
    model: Any,
    saes: Mapping[str, SAE] | Sequence[SAE],
    task: str | TaskDataModule = "ioi",
    *,
    trainer: L.Trainer | str | None = None,
    **options: Any,
) -> Results:
    """Evaluate `saes` spliced into `model` (a HookedSAETransformer or HookedTransformer already loaded) on
    `task` (a task name: toxicity, ioi, lm; or a TaskDataModule) and return its Results.

    `options` are the CLI's knobs with the CLI's defaults: limit, batch_size, seed, mask="answer" (or a dict of
    mask keys, e.g. mask={"splice": {"positions": ["S2"]}}), compat="saelens", splice="each_layer", groups=[[...]], ablation="mean", singles, use_error_term,
    features="attribution" (or a dict of its keys, e.g. features={"positions": ["S2"], "top_k": 10}: which
    latents move the logit difference, in `Results.features`), and the task's own keys (n_examples=...). `trainer` is a config choice ("cpu", "gpu"; default: "gpu" for
    a model on CUDA, else "cpu") or a Lightning Trainer. The model and SAEs are left exactly as they were (weights, hooks, modes, devices).
    """
    named = named_saes(saes)
    task_name = task if isinstance(task, str) else None
    if not isinstance(task, (str, TaskDataModule)):
        raise SaeevalError(f"task must be a task name (toxicity, ioi, lm) or a TaskDataModule, not {type(task).__name__}")
    if trainer is None and str(model.cfg.device).startswith("cuda"):
        trainer = "gpu"
    if isinstance(trainer, str):
        options = {**options, "trainer": trainer}
    cfg = compose_config(task_name, options)
    validate_saes(named, model)
    config = _config_of(cfg, model, named, task, trainer)
    L.seed_everything(cfg.seed, verbose=False)
    quiet_lightning()
    mask = build(cfg.mask)
    module = build(cfg.task) if task_name else task
    features = build(cfg.features) if cfg.get("features") else None
    if not isinstance(trainer, L.Trainer):
        trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False, **trainer_kwargs(features))
    converts = str(trainer.precision).endswith("-true") or str(trainer.precision) == "64"
    with left_as_found([model, *named.values()], converts_weights=converts):
        results = run_evaluation(model, named, module, mask, OmegaConf.to_container(cfg.splice), trainer, config,
                                 features, compat=cfg.compat)
    if results is None:
        raise SaeevalError("saeeval.evaluate ran as a non-zero DDP rank; use the CLI for multi-process runs")
    if (err := non_finite_error(results.document, "the returned Results")) is not None:
        warnings.warn(str(err), RuntimeWarning, stacklevel=2)  # a notebook keeps its Results; the CLI exits 2
    return results


def _config_of(cfg: DictConfig, model: Any, saes: Mapping[str, SAE], task: Any, trainer: Any) -> dict[str, Any]:
    """The resolved config recorded in results.json: the model and SAEs as given in memory, not loaders."""
    with open_dict(cfg):
        cfg.model = {"name": model.cfg.model_name, "source": "in_memory"}
        cfg.saes = {"source": "in_memory", "names": list(saes), "hooks": [sae_hook(s) for s in saes.values()]}
        cfg.device, cfg.dtype = str(model.cfg.device), str(model.cfg.dtype).removeprefix("torch.")
        if not isinstance(task, str):
            cfg.task = {"_target_": f"{type(task).__module__}.{type(task).__qualname__}", **task.options()}
        if isinstance(trainer, L.Trainer):
            cfg.trainer = {"accelerator": type(trainer.accelerator).__name__, "devices": trainer.num_devices,
                           "precision": str(trainer.precision)}
        for key in FILE_OPTIONS:
            cfg.pop(key, None)
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
