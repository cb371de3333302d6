"""The config hash: what a run computed, so a rerun of a finished config is skipped and runs can be compared.

It describes what was computed, not where the code lives: each saeeval object a config builds (`_target_`) is
hashed by a stable id, so moving a class to another module never orphans finished runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

# Keys that change where or how a run executes but not what it computes. `device` only says where the weights
# are loaded: the trainer then places them, and its accelerator and precision (which do change the numbers) are
# hashed through _HASHED_TRAINER_KEYS; devices, strategy and the like split the work without changing it.
_UNHASHED = ("hydra", "force", "plot", "trainer", "logger", "device")
_HASHED_TRAINER_KEYS = ("accelerator", "precision")
_PACKAGES = ("torch", "transformer_lens", "sae_lens", "lightning", "torchmetrics", "hydra-core", "transformers")


# The stable id of each saeeval object a config can build: the path it had when results were first written
# (saeeval 0.1.0's flat layout). Hashes name these ids, so a `_target_` that moves keeps its runs' hashes; an
# object added later is hashed by its own path. tests/test_config_hash.py pins that every hashed `_target_` in
# conf/ resolves and that results written by 0.1.0 are still recognised.
TARGET_IDS = {
    "saeeval.loading.models.load_model": "saeeval.models.load_model",
    "saeeval.loading.saes.load_saes": "saeeval.saes.load_saes",
    "saeeval.engine.masks.Masks": "saeeval.masks.Masks",
    "saeeval.engine.masks.TokenMask": "saeeval.masks.TokenMask",
}


def _stable_targets(node: Any) -> Any:
    """`node` with every `_target_` replaced by its stable id (TARGET_IDS)."""
    if isinstance(node, Mapping):
        return {
            k: TARGET_IDS.get(v, v) if k == "_target_" and isinstance(v, str) else _stable_targets(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_stable_targets(v) for v in node]
    return node


def config_hash(config: Mapping[str, Any]) -> str:
    """A stable hash of what a run computes (the resolved config minus execution-only keys, `_target_`s by their
    stable ids)."""
    kept = {k: _stable_targets(v) for k, v in config.items() if k not in _UNHASHED}
    trainer = config.get("trainer") or {}
    kept["trainer"] = {k: trainer.get(k) for k in _HASHED_TRAINER_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def versions() -> dict[str, str | None]:
    """Installed versions of the libraries whose behaviour the numbers depend on."""
    out: dict[str, str | None] = {}
    for pkg in _PACKAGES:
        try:
            out[pkg.replace("-", "_")] = version(pkg.replace("_", "-"))
        except PackageNotFoundError:
            out[pkg.replace("-", "_")] = None
    return out
