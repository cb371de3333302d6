"""`saeeval.evaluate(model, saes, task=...)`: the evaluation for a model and SAEs already in memory (notebooks).

It runs the same path as `python -m saeeval` (saeeval.api.evaluator.run_evaluation), with the same options and
defaults, read from the same Hydra config tree (saeeval.api.config_tree), and leaves the model and SAEs as it
found them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from sae_lens import SAE

from saeeval.api.config_tree import FILE_OPTIONS, compose_config
from saeeval.api.evaluator import build, quiet_lightning, run_evaluation
from saeeval.api.results import Results
from saeeval.errors import SaeevalError
from saeeval.features.setup import trainer_kwargs
from saeeval.hooknames import sae_hook
from saeeval.loading.saes import validate_saes
from saeeval.results.non_finite import non_finite_error
from saeeval.tasks.base import TaskDataModule


@contextmanager
def left_as_found(modules: Sequence[torch.nn.Module], converts_weights: bool = False) -> Iterator[None]:
    """Restore what evaluating may change on the caller's modules: requires_grad, train/eval mode, device,
    dtype and the device/dtype bookkeeping of TransformerLens (`cfg`) and sae_lens (`SAE.device/dtype`).
    `converts_weights`: the trainer's precision casts the weights, so a copy is kept to put back bit for bit."""
    grads = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    modes = [(sub, sub.training) for m in modules for sub in m.modules()]
    placed = [
        (m, next(m.parameters()).device, next(m.parameters()).dtype, _bookkeeping(m))
        for m in modules
        if any(True for _ in m.parameters())
    ]
    saved = (
        [{k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()} for m in modules]
        if converts_weights
        else None
    )
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
            for m, state in zip(modules, saved, strict=True):
                m.load_state_dict(state)
        for p, flag in grads:
            p.requires_grad_(flag)
        for sub, flag in modes:
            sub.train(flag)


def _bookkeeping(module: torch.nn.Module) -> list[tuple[Any, str, Any]]:
    """(owner, attribute, value) of the device/dtype records TransformerLens and sae_lens route inputs by."""
    owners = [o for o in (getattr(module, "cfg", None), module) if o is not None]
    return [
        (o, attr, getattr(o, attr))
        for o in owners
        for attr in ("device", "dtype")
        if attr in getattr(o, "__dict__", {})
    ]


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


def same_gpu(trainer: Mapping[str, Any], device: Any) -> dict[str, Any]:
    """`devices=[k]` for a model on `cuda:k` and a one-device GPU trainer: Lightning's `devices=1` means `cuda:0`,
    where it would move the caller's model (and back). Nothing otherwise."""
    place = torch.device(str(device))
    on_one_gpu = trainer.get("devices") == 1 and str(trainer.get("accelerator")).lower() != "cpu"
    return {"devices": [place.index]} if place.type == "cuda" and place.index and on_one_gpu else {}


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
    mask keys, e.g. mask={"splice": {"positions": ["S2"]}}), compat="saelens", splice="each_layer", groups=[[...]],
    ablation="mean", singles, use_error_term, features="attribution" (or a dict of its keys, e.g.
    features={"positions": ["S2"], "top_k": 10}: which latents move the logit difference, in `Results.features`),
    and the task's own keys (n_examples=...). `trainer` is a config choice ("cpu", "gpu"; default: "gpu" for a
    model on CUDA, else "cpu") or a Lightning Trainer. The model and SAEs are left exactly as they were (weights,
    hooks, modes, devices).
    """
    named = named_saes(saes)
    task_name = task if isinstance(task, str) else None
    if not isinstance(task, TaskDataModule) and not (isinstance(task, str) and task):
        raise SaeevalError(
            f"task must be a task name (toxicity, ioi, lm) or a TaskDataModule, not {task!r}"
            if isinstance(task, str)
            else f"task must be a task name (toxicity, ioi, lm) or a TaskDataModule, not {type(task).__name__}"
        )
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
    module = task if isinstance(task, TaskDataModule) else build(cfg.task)
    features = build(cfg.features) if cfg.get("features") else None
    if not isinstance(trainer, L.Trainer):
        trainer = cast(  # every trainer config builds a lightning Trainer
            L.Trainer,
            instantiate(
                cfg.trainer,
                logger=False,
                enable_progress_bar=False,
                **trainer_kwargs(features),
                **same_gpu(cfg.trainer, model.cfg.device),
            ),
        )
    converts = str(trainer.precision).endswith("-true") or str(trainer.precision) == "64"
    with left_as_found([model, *named.values()], converts_weights=converts):
        results = run_evaluation(
            model,
            named,
            module,
            mask,
            cast("dict[str, Any]", OmegaConf.to_container(cfg.splice)),  # a DictConfig gives a dict
            trainer,
            config,
            features,
            compat=cfg.compat,
        )
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
            cfg.trainer = {
                "accelerator": type(trainer.accelerator).__name__,
                "devices": trainer.num_devices,
                "precision": str(trainer.precision),
            }
        for key in FILE_OPTIONS:
            cfg.pop(key, None)
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
