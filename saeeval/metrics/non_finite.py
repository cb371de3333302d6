"""Count positions whose values became NaN or ±inf during a run, per site of one condition.

Why: a condition whose SAE overflows (finite weights, huge pre-activations) or whose model overflows in
float16/bfloat16 produces NaN metrics that would otherwise look like "not applicable". Counting where they first
appear (an SAE's reconstruction, the final residual stream, the scored logits) lets the run name the condition
and the place, mark its values as NaN and fail. Counts are float64 sum states, so a DDP run counts exactly what a
single process does; the checks read tensors the engine already has (`[N, d]` rows, never `[R, V]` logits).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

_F64 = torch.float64
FINAL = "final residual stream"
LOGITS = "logits"
ANSWERS = "answer logits"


def reconstruction_site(hook: str) -> str:
    """The site name of an SAE's reconstruction at `hook`."""
    return f"SAE reconstruction at {hook}"


def bad_rows(values: Tensor) -> Tensor:
    """Bool `values.shape[:-1]`: the rows (positions) holding a NaN or ±inf, read from each row's sum (in at least
    float32): a NaN or inf anywhere makes the sum non-finite, and one reduction costs ~30× less than isfinite on
    every element. A finite row whose sum overflows float32 (values near 3e38 / d) counts too; such a row makes
    the next LayerNorm overflow anyway."""
    return ~torch.isfinite(values.sum(-1, dtype=torch.promote_types(values.dtype, torch.float32)))


class NonFinite(Metric):
    """Positions with non-finite values per site (`sites`, in the order they are computed in a forward).

    ``update(site, bad)``: `bad` is a bool tensor of positions (see `bad_rows`), or any tensor whose non-finite
    entries are counted (per-row values such as CE or a logit difference). ``compute()`` → {site: count} for
    the sites with a non-zero count, in site order.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    counts: Tensor

    def __init__(self, sites: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sites = list(sites)
        self._index = {s: i for i, s in enumerate(self.sites)}
        self.add_state("counts", default=torch.zeros(len(self.sites), dtype=_F64), dist_reduce_fx="sum")

    def update(self, site: str, bad: Tensor) -> None:
        if bad.dtype != torch.bool:
            bad = ~torch.isfinite(bad)
        self.counts[self._index[site]] += bad.sum().to(self.counts.device)

    def compute(self) -> dict[str, int]:
        counts = self.counts.tolist()
        return {site: int(n) for site, n in zip(self.sites, counts, strict=True) if n}
