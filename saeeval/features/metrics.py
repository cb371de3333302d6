"""Metric states of feature attribution: float64 sums per task group, fire counts, per-example rows.

Every number in features.json comes from these states, reduced across DDP ranks by torchmetrics (sums and
concatenations), so `trainer=ddp_cpu` gives the single-process file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

from saeeval.metrics.stats import mean_and_stderr, normal_interval

_F64 = torch.float64


class GroupedSums(Metric):
    """Count, Σv and Σv² of per-example vectors `v [width]`, kept per task group (identity × label, order).

    ``update(values [B, width], group [B])``. ``pooled(groups)`` gives the mean, stderr and 95% CI over the
    examples of any set of groups (all of them: the overall numbers).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    n: Tensor
    total: Tensor
    total_sq: Tensor

    def __init__(self, num_groups: int, width: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_groups, self.width = num_groups, width
        self.add_state("n", default=torch.zeros(num_groups, dtype=_F64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(num_groups, width, dtype=_F64), dist_reduce_fx="sum")
        self.add_state("total_sq", default=torch.zeros(num_groups, width, dtype=_F64), dist_reduce_fx="sum")

    def update(self, values: Tensor, group: Tensor) -> None:
        if values.ndim != 2 or values.shape[1] != self.width or group.shape != values.shape[:1]:
            raise ValueError(
                f"values must be [B, {self.width}] and group [B], got {tuple(values.shape)}, {tuple(group.shape)}"
            )
        v = values.detach().to(device=self.n.device, dtype=_F64)
        onehot = torch.nn.functional.one_hot(group.to(self.n.device).long(), self.num_groups).to(_F64)
        self.n += onehot.sum(0)
        self.total += onehot.T @ v
        self.total_sq += onehot.T @ (v * v)

    def compute(self) -> dict[str, Tensor]:
        return {"n": self.n, "total": self.total, "total_sq": self.total_sq}

    def pooled(self, groups: Sequence[int] | None = None) -> dict[str, Tensor]:
        """`mean`, `stderr`, `ci_low`, `ci_high` `[width]` and `n` over the examples of `groups` (None: all)."""
        sums = self.compute()
        idx = torch.arange(self.num_groups) if groups is None else torch.as_tensor(list(groups), dtype=torch.long)
        idx = idx.to(sums["n"].device)
        n = sums["n"][idx].sum()
        mean, stderr = mean_and_stderr(n.expand(self.width), sums["total"][idx].sum(0), sums["total_sq"][idx].sum(0))
        low, high = normal_interval(mean, stderr)
        return {"mean": mean, "stderr": stderr, "ci_low": low, "ci_high": high, "n": n}


class FireCounts(Metric):
    """How often each latent is non-zero at the chosen positions: ``update(f [N, width])``."""

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    n: Tensor
    fires: Tensor

    def __init__(self, width: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("n", default=torch.zeros((), dtype=_F64), dist_reduce_fx="sum")
        self.add_state("fires", default=torch.zeros(width, dtype=_F64), dist_reduce_fx="sum")

    def update(self, feats: Tensor) -> None:
        f = feats.detach().to(self.fires.device)
        self.n += f.shape[0]
        self.fires += (f != 0).sum(0).to(_F64)

    def compute(self) -> dict[str, Tensor]:
        """`rate`: fire rate per latent (NaN when no position was seen); `n`: positions seen (over all ranks)."""
        rate = self.fires / self.n if self.n > 0 else torch.full_like(self.fires, float("nan"))
        return {"rate": rate, "n": self.n.clone()}


class LatentSum(Metric):
    """Σf and the position count: the mean of each latent over the chosen positions (the `mean` baseline)."""

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    n: Tensor
    total: Tensor

    def __init__(self, width: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("n", default=torch.zeros((), dtype=_F64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(width, dtype=_F64), dist_reduce_fx="sum")

    def update(self, feats: Tensor) -> None:
        self.n += feats.shape[0]
        self.total += feats.detach().to(self.total.device, _F64).sum(0)

    def compute(self) -> Tensor:
        return self.total / self.n if self.n > 0 else torch.full_like(self.total, float("nan"))


class ExampleRows(Metric):
    """Per-example vectors keyed by example id, gathered across ranks: ``update(ids [B], rows [B, width])``;
    ``compute()`` → (ids ascending, rows `[N, width]` in that order)."""

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    ids: list[Tensor]
    rows: list[Tensor]

    def __init__(self, width: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.width = width
        self.add_state("ids", default=[], dist_reduce_fx="cat")
        self.add_state("rows", default=[], dist_reduce_fx="cat")

    def update(self, ids: Tensor, rows: Tensor) -> None:
        self.ids.append(ids.detach().to(device=self.device, dtype=torch.long))
        self.rows.append(rows.detach().to(device=self.device, dtype=_F64))

    def _sync_dist(self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None) -> None:
        # a rank without examples would send torchmetrics' float32 placeholder; all_gather needs equal dtypes
        if not self.ids:
            self.ids = [torch.empty(0, dtype=torch.long, device=self.device)]
            self.rows = [torch.empty(0, self.width, dtype=_F64, device=self.device)]
        super()._sync_dist(dist_sync_fn, process_group)

    def compute(self) -> tuple[Tensor, Tensor]:
        if isinstance(self.ids, list) and not self.ids:
            return torch.empty(0, dtype=torch.long), torch.empty(0, self.width, dtype=_F64)
        ids = dim_zero_cat(self.ids).long()
        rows = dim_zero_cat(self.rows).to(_F64).reshape(-1, self.width)
        order = torch.argsort(ids, stable=True)
        return ids[order], rows[order]
