"""saeeval's Hydra config tree (`saeeval.conf`): its groups and their choices, and composing it with options.

The one place that knows the tree's shape: the command line checks choices against it (saeeval.cli.choices,
saeeval.cli.config_check) and `saeeval.evaluate` composes the same defaults from it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import resources
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from saeeval.errors import SaeevalError

GROUPS = ("task", "model", "saes", "mask", "splice", "trainer", "logger", "features")
"""The config groups a run chooses from (the folders of conf/ but Hydra's own `hydra/`; a test pins the two)."""
REQUIRED_GROUPS = ("model", "saes", "mask", "splice", "trainer")
"""The groups every run needs a choice for (conf/config.yaml's defaults give them one)."""
SPLICE_KNOBS = ("singles", "groups", "ablation", "use_error_term")  # `splice` keys evaluate() takes by name
IN_MEMORY = ("model", "saes", "task", "logger", "hydra")  # given as objects, not chosen from the config tree
FILE_OPTIONS = ("force", "plot")  # skip finished runs, write the PNG: the CLI's files, not in memory
CLI_ONLY = (*FILE_OPTIONS, "device", "dtype")  # the model given in memory says where and in what it runs


def group_options(group: str) -> list[str]:
    """The config names available in one group of `saeeval.conf` (e.g. task -> ioi, lm, toxicity, toxicity_chat)."""
    folder = resources.files("saeeval.conf").joinpath(group)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


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

    groups = [g for g in GROUPS if g not in IN_MEMORY]
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
            # the keys of a config composed from YAML are strings
            known = cast("list[str]", [k for k in cfg if not OmegaConf.is_dict(cfg[k]) and k not in CLI_ONLY])
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
