"""Mean activation per hook over the eval set: the replacement value of mean-ablation baselines."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from saeeval.engine.splicing import CleanPass
from saeeval.errors import SaeevalError


class ActivationMeans:
    """Mean activation per hook over masked-in positions of the whole eval set, for mean-ablation baselines.

    Sums are kept in float64; call `sync()` under DDP before `compute()` so every rank ablates with the same mean.
    """

    def __init__(self, hooks: Iterable[str]) -> None:
        self.hooks = list(dict.fromkeys(hooks))
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, torch.Tensor] = {}
        self.dtypes: dict[str, torch.dtype] = {}

    @torch.no_grad()
    def update(self, clean: CleanPass, mask: torch.Tensor) -> None:
        """Add the masked-in activations of one clean pass."""
        for h in self.hooks:
            act = clean.acts[h]
            sel = act[mask.to(act.device)].to(torch.float64)
            if h not in self.sums:
                self.sums[h] = torch.zeros(act.shape[2:], dtype=torch.float64, device=act.device)
                self.counts[h] = torch.zeros((), dtype=torch.float64, device=act.device)
                self.dtypes[h] = act.dtype
            self.sums[h] += sel.sum(dim=0)
            self.counts[h] += sel.shape[0]

    def sync(self) -> None:
        """Sum the states across DDP ranks (every rank must have seen at least one batch)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for h in self.hooks:
                torch.distributed.all_reduce(self.sums[h])
                torch.distributed.all_reduce(self.counts[h])

    def compute(self) -> dict[str, torch.Tensor]:
        """Per-hook mean vector (hook_z: `[H, dh]`) in the activation dtype."""
        missing = [h for h in self.hooks if h not in self.counts or self.counts[h].item() == 0]
        if missing:
            raise SaeevalError(f"no masked-in tokens were seen at {missing}; the mask excludes every position")
        return {h: (self.sums[h] / self.counts[h]).to(self.dtypes[h]) for h in self.hooks}
