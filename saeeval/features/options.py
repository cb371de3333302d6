"""`features=attribution`: the options of feature attribution, checked once when the config is built."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from saeeval.engine.masks import TokenMask
from saeeval.errors import SaeevalError

METHODS = ("atp", "ig")
BASELINES = ("zero", "mean")


class FeatureAttribution:
    """What to attribute and how (conf/features/attribution.yaml documents each option).

    `positions`: task names (S2, END, answer) or real-token indices; None = the run's mask positions.
    `saes`: SAE or hook names; None = every SAE that is a condition on its own.
    """

    def __init__(
        self,
        method: Literal["atp", "ig"] = "atp",
        baseline: Literal["zero", "mean"] = "zero",
        positions: Sequence[int | str] | None = None,
        top_k: int = 20,
        ig_steps: int = 16,
        saes: Sequence[str] | None = None,
        latents_per_forward: int = 8,
        n_differing: int = 5,
    ) -> None:
        if method not in METHODS:
            raise SaeevalError(f"features.method={method!r} is unknown; use atp (attribution patching) or ig")
        if baseline not in BASELINES:
            raise SaeevalError(f"features.baseline={baseline!r} is unknown; use zero or mean")
        for key, value in (("top_k", top_k), ("ig_steps", ig_steps), ("latents_per_forward", latents_per_forward)):
            if value < 1:
                raise SaeevalError(f"features.{key}={value} must be at least 1")
        if n_differing < 0:
            raise SaeevalError(f"features.n_differing={n_differing} must be 0 or more")
        self.method, self.baseline, self.top_k, self.ig_steps = method, baseline, int(top_k), int(ig_steps)
        self.positions = None if positions is None else list(positions)
        self.mask = None if positions is None else TokenMask(exclude_special=True, positions=positions)
        self.saes = None if saes is None else [str(s) for s in saes]
        self.latents_per_forward, self.n_differing = int(latents_per_forward), int(n_differing)

    def describe(self) -> dict[str, object]:
        """The options as features.json records them."""
        return {
            "method": self.method,
            "baseline": self.baseline,
            "top_k": self.top_k,
            "ig_steps": self.ig_steps if self.method == "ig" else None,
        }

    def __repr__(self) -> str:
        return f"FeatureAttribution({self.describe()}, positions={self.positions}, saes={self.saes})"
