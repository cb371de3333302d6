"""Task metrics over per-example logit differences: overall, per group, and per example (for samples.jsonl)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

from saeeval.metrics.stats import summarize_logit_diffs

_F64 = torch.float64


def _check_pair(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Both inputs 1-D [batch] and of one shape."""
    _check_1d(name_a, a)
    _check_1d(name_b, b)
    if a.shape != b.shape:
        raise ValueError(f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} differ in shape")


def check_group_ids(group: Tensor, num_groups: int) -> None:
    """Group ids must lie in [0, num_groups). Checked where that is free, on host tensors: on a GPU reading the
    range would stop the stream once per condition and batch, and the ids come from the task's own group list."""
    if group.device.type != "cpu" or group.numel() == 0:
        return
    low, high = int(group.min()), int(group.max())
    if low < 0 or high >= num_groups:
        raise ValueError(f"group ids must lie in [0, {num_groups}), got values in [{low}, {high}]")


def _check_1d(name: str, value: Tensor) -> None:
    if value.ndim != 1:
        raise ValueError(f"{name} must be 1-D [batch], got shape {tuple(value.shape)}")


class _LogitDiffSums(Metric):
    """Float64 sums behind the logit-diff metrics: count, Σd, Σd², #{d > 0}, each of shape `shape`."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    n: Tensor
    total: Tensor
    total_sq: Tensor
    n_correct: Tensor

    def __init__(self, shape: tuple[int, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("n", "total", "total_sq", "n_correct"):
            self.add_state(name, default=torch.zeros(shape, dtype=_F64), dist_reduce_fx="sum")


class LogitDiff(_LogitDiffSums):
    """Mean logit difference d = logit(correct) − logit(incorrect) over examples, with accuracy and 95% CIs.

    Input: ``update(logit_diff: Tensor[B])`` (any float dtype). Also serves paired differences: feed
    d_condition − d_clean per example to get the mean change and its paired stderr.

    ``compute()`` → dict of float64 scalars:
      logit_diff = Σd/n; logit_diff_stderr = s/√n (s with ddof=1); logit_diff_ci_low/high = mean ∓ 1.96·stderr
      (normal approximation); accuracy = #{d > 0}/n (ties count as wrong); accuracy_stderr = √(p(1−p)/n);
      accuracy_ci_low/high = Wilson 95% interval; error_rate = 1 − accuracy; n.
    Undefined values (n = 0; stderr/CI with n < 2) are NaN. States are float64 sums (``dist_reduce_fx="sum"``),
    so the DDP result equals the single-process one. higher_is_better: True (logit_diff, accuracy).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__((), **kwargs)

    def update(self, logit_diff: Tensor) -> None:
        _check_1d("logit_diff", logit_diff)
        if logit_diff.numel() == 0:
            return
        d = logit_diff.detach().to(device=self.n.device, dtype=_F64)
        self.n += d.numel()
        self.total += d.sum()
        self.total_sq += (d * d).sum()
        self.n_correct += (d > 0).sum()

    def compute(self) -> dict[str, Tensor]:
        return summarize_logit_diffs(self.n, self.total, self.total_sq, self.n_correct)


class GroupedLogitDiff(_LogitDiffSums):
    """LogitDiff kept separately for ``num_groups`` groups (e.g. identity × label), poolable afterwards.

    Input: ``update(logit_diff: Tensor[B], group: LongTensor[B])`` with group ids in [0, num_groups).
    ``compute()`` → dict of float64 vectors [num_groups]: the keys of :class:`LogitDiff` per group (n, logit_diff,
    logit_diff_stderr, CIs, accuracy, error_rate, ...) plus the raw synced sums ``total``, ``total_sq``,
    ``n_correct``. ``summarize(groups)`` pools any subset of groups (e.g. all nontoxic rows of one identity →
    its error_rate is the false-positive rate). higher_is_better: True (logit_diff, accuracy).
    """

    def __init__(self, num_groups: int, **kwargs: Any) -> None:
        if num_groups < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}")
        super().__init__((num_groups,), **kwargs)
        self.num_groups = num_groups

    def update(self, logit_diff: Tensor, group: Tensor) -> None:
        _check_pair("logit_diff", logit_diff, "group", group)
        if logit_diff.numel() == 0:
            return
        check_group_ids(group, self.num_groups)
        group = group.detach().to(self.n.device).long()
        d = logit_diff.detach().to(device=self.n.device, dtype=_F64)
        # One-hot sums instead of index_add_/bincount: deterministic on every device.
        onehot = torch.nn.functional.one_hot(group, self.num_groups).to(_F64)
        self.n += onehot.sum(0)
        self.total += d @ onehot
        self.total_sq += (d * d) @ onehot
        self.n_correct += (d > 0).to(_F64) @ onehot

    def compute(self) -> dict[str, Tensor]:
        out = summarize_logit_diffs(self.n, self.total, self.total_sq, self.n_correct)
        out.update(total=self.total, total_sq=self.total_sq, n_correct=self.n_correct)
        return out

    def summarize(self, groups: Sequence[int]) -> dict[str, float]:
        """Pool the synced sums of ``groups`` → logit_diff, logit_diff_stderr, accuracy, error_rate, n (floats).

        Goes through ``compute()`` (cached after the first call), so under DDP call it on every rank.
        """
        idx = torch.as_tensor(list(groups), dtype=torch.long)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_groups):
            raise ValueError(f"groups must lie in [0, {self.num_groups}), got {list(groups)}")
        c = self.compute()
        idx = idx.to(c["n"].device)
        pooled = summarize_logit_diffs(*(c[k][idx].sum() for k in ("n", "total", "total_sq", "n_correct")))
        keys = ("logit_diff", "logit_diff_stderr", "accuracy", "error_rate", "n")
        return {k: float(pooled[k]) for k in keys}


class PerExample(Metric):
    """Per-example values keyed by example id, gathered across ranks (for samples.jsonl).

    Input: ``update(ids: LongTensor[B], values: Tensor[B])``. ``compute()`` → (ids int64 [N] ascending,
    values float64 [N] in the same order); empty tensors when nothing was seen. States are ``cat`` lists, so
    after DDP gather every rank holds all examples. higher_is_better: None (a record, not a score).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    ids: list[Tensor]
    values: list[Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("ids", default=[], dist_reduce_fx="cat")
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def update(self, ids: Tensor, values: Tensor) -> None:
        _check_pair("ids", ids, "values", values)
        if ids.numel() == 0:
            return
        self.ids.append(ids.detach().to(device=self.device, dtype=torch.long))
        self.values.append(values.detach().to(device=self.device, dtype=_F64))

    def _sync_dist(self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None) -> None:
        # A rank that saw no examples would otherwise send torchmetrics' placeholder in the metric's default
        # dtype (float32) while the others send int64 ids / float64 values: all_gather needs matching dtypes.
        if not self.ids:
            self.ids = [torch.empty(0, dtype=torch.long, device=self.device)]
            self.values = [torch.empty(0, dtype=_F64, device=self.device)]
        super()._sync_dist(dist_sync_fn, process_group)

    def compute(self) -> tuple[Tensor, Tensor]:
        if isinstance(self.ids, list) and not self.ids:
            return torch.empty(0, dtype=torch.long, device=self.device), torch.empty(0, dtype=_F64, device=self.device)
        ids = dim_zero_cat(self.ids).long()
        values = dim_zero_cat(self.values).to(_F64)
        order = torch.argsort(ids, stable=True)
        return ids[order], values[order]
