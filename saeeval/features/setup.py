"""Choosing what feature attribution runs on, checked before any forward pass: which SAEs, which positions,
and a trainer that can take gradients."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
from sae_lens import SAE

from saeeval.engine.conditions import Condition
from saeeval.engine.masks import TokenMask
from saeeval.errors import SaeevalError
from saeeval.features.callback import FeatureCallback
from saeeval.features.options import FeatureAttribution
from saeeval.hooknames import sae_hook
from saeeval.tasks.base import TaskDataModule


def attributed_saes(options: FeatureAttribution, saes: Mapping[str, SAE], conditions: Sequence[Condition]) -> list[str]:
    """`features.saes` (SAE or hook names) or, by default, every SAE that is a condition on its own."""
    if options.saes is None:
        names = [c.saes[0] for c in conditions if c.ablation is None and len(c.saes) == 1]
        if not names:
            raise SaeevalError(
                "features=attribution found no single-SAE condition; set splice.singles=true or "
                "name SAEs with features.saes=[...]"
            )
        return names
    by_hook = {sae_hook(s): n for n, s in saes.items()}
    out = []
    for name in options.saes:
        resolved = name if name in saes else by_hook.get(name)
        if resolved is None:
            raise SaeevalError(
                f"features.saes names {name!r}, which is neither a loaded SAE nor its hook; "
                f"available: {', '.join(sorted(set(saes) | set(by_hook)))}"
            )
        out.append(resolved)
    return list(dict.fromkeys(out))


def feature_callback(
    options: FeatureAttribution,
    saes: Mapping[str, SAE],
    conditions: Sequence[Condition],
    task: TaskDataModule,
    mask: TokenMask,
    special_ids: Sequence[int],
    trainer: L.Trainer,
) -> FeatureCallback:
    """The callback for this run, after checking that the task, the positions and the trainer allow it."""
    if not task.has_answers:
        raise SaeevalError(
            f"features=attribution needs a task with answers (a logit difference); task {task.name!r} "
            "has none: use +task=ioi or +task=toxicity"
        )
    for p in options.positions or []:
        if isinstance(p, str) and not p.lstrip("-").isdigit() and p not in task.position_names:
            raise SaeevalError(
                f"features.positions names {p!r}, which task {task.name!r} does not offer (it offers: "
                f"{', '.join(task.position_names)}); use one of those or an index such as -1"
            )
    if getattr(trainer.test_loop, "inference_mode", False):
        raise SaeevalError(
            "features=attribution takes gradients, which a Trainer(inference_mode=True) forbids: "
            "build it with lightning.Trainer(..., inference_mode=False)"
        )
    names = attributed_saes(options, saes, conditions)
    return FeatureCallback(options, names, task, mask, special_ids)


def trainer_kwargs(features: Any) -> dict[str, Any]:
    """Extra Trainer arguments when features are on: gradients need the test loop out of inference mode."""
    return {"inference_mode": False} if features is not None else {}
