"""States of generation-based answers: per-group label counts (sums) and the generated tokens per example (cat).

Counts are int64 sums (`dist_reduce_fx="sum"`), so a DDP run gives the single-process numbers, and precision
plugins that cast a module's floating-point tensors leave them alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

from saeeval.metrics.logit_diff import check_group_ids

COUNTS = ("n", "n_parsed", "n_correct", "n_agree")
CORRECT, INCORRECT = 0, 1
"""Parsed answers index the candidates (correct, incorrect); saeeval.tasks.answer_parsing.UNPARSED is -1."""


class GeneratedLabels(Metric):
    """Per group: examples `n`, answers parsed `n_parsed`, parsed as the correct answer `n_correct`, and parsed as
    the answer the logit difference prefers (`n_agree`: correct when LD > 0, else incorrect; ties count as
    incorrect, as in LogitDiff's accuracy).

    Input: ``update(parsed: LongTensor[B] in {-1, 0, 1}, group: LongTensor[B], logit_diff: Tensor[B])``.
    ``compute()`` → dict of int64 vectors [num_groups] (COUNTS). higher_is_better: True.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    n: Tensor
    n_parsed: Tensor
    n_correct: Tensor
    n_agree: Tensor

    def __init__(self, num_groups: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_groups < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}")
        self.num_groups = num_groups
        for name in COUNTS:
            self.add_state(name, default=torch.zeros(num_groups, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, parsed: Tensor, group: Tensor, logit_diff: Tensor) -> None:
        if not (parsed.ndim == group.ndim == logit_diff.ndim == 1 and parsed.shape == group.shape == logit_diff.shape):
            raise ValueError(
                f"parsed {tuple(parsed.shape)}, group {tuple(group.shape)} and logit_diff "
                f"{tuple(logit_diff.shape)} must be one [batch] shape"
            )
        if parsed.numel() == 0:
            return
        check_group_ids(group, self.num_groups)
        dev = self.n.device
        parsed, group = parsed.to(dev).long(), group.to(dev).long()
        preferred = torch.where(logit_diff.to(dev) > 0, CORRECT, INCORRECT)
        onehot = torch.nn.functional.one_hot(group, self.num_groups)
        for name, hit in (
            ("n", torch.ones_like(parsed, dtype=torch.bool)),
            ("n_parsed", parsed >= 0),
            ("n_correct", parsed == CORRECT),
            ("n_agree", parsed == preferred),
        ):
            setattr(self, name, getattr(self, name) + (hit.long()[:, None] * onehot).sum(0))

    def compute(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in COUNTS}


class GeneratedTokens(Metric):
    """The generated tokens `[B, max_new_tokens]` and parsed answer of each example, keyed by example id, gathered
    across ranks (for samples.jsonl). ``compute()`` → (ids [N] ascending, tokens [N, K], parsed [N])."""

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    ids: list[Tensor] | Tensor  # "cat" states: lists of batches, one tensor after a DDP sync
    tokens: list[Tensor] | Tensor
    parsed: list[Tensor] | Tensor

    def __init__(self, max_new_tokens: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.width = int(max_new_tokens)
        for name in ("ids", "tokens", "parsed"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, ids: Tensor, tokens: Tensor, parsed: Tensor) -> None:
        if tokens.shape != (ids.shape[0], self.width) or parsed.shape != ids.shape:
            raise ValueError(
                f"ids {tuple(ids.shape)}, tokens {tuple(tokens.shape)}, parsed {tuple(parsed.shape)}: "
                f"need [B], [B, {self.width}], [B]"
            )
        for name, value in (("ids", ids), ("tokens", tokens), ("parsed", parsed)):
            getattr(self, name).append(value.detach().to(device=self.device, dtype=torch.long))

    def _sync_dist(self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None) -> None:
        # A rank that saw no examples would send torchmetrics' float placeholder: send empty int64 rows instead.
        if not self.ids:
            empty = torch.empty(0, dtype=torch.long, device=self.device)
            self.ids, self.parsed = [empty], [empty]
            self.tokens = [torch.empty(0, self.width, dtype=torch.long, device=self.device)]
        super()._sync_dist(dist_sync_fn, process_group)

    def compute(self) -> tuple[Tensor, Tensor, Tensor]:
        if isinstance(self.ids, list) and not self.ids:
            empty = torch.empty(0, dtype=torch.long, device=self.device)
            return empty, torch.empty(0, self.width, dtype=torch.long, device=self.device), empty
        ids = dim_zero_cat(self.ids)
        order = torch.argsort(ids, stable=True)
        return ids[order], dim_zero_cat(self.tokens).reshape(-1, self.width)[order], dim_zero_cat(self.parsed)[order]


class GenerationMetrics(torch.nn.Module):
    """One condition's generation states."""

    def __init__(self, num_groups: int, max_new_tokens: int) -> None:
        super().__init__()
        self.labels = GeneratedLabels(num_groups)
        self.tokens = GeneratedTokens(max_new_tokens)

    def compute(self) -> GenerationComputed:
        ids, tokens, parsed = self.tokens.compute()
        return GenerationComputed(
            {k: v.detach().cpu() for k, v in self.labels.compute().items()},
            ids.tolist(),
            tokens.tolist(),
            parsed.tolist(),
        )


@dataclass
class GenerationComputed:
    """One condition's synced generation states: per-group COUNTS and, per example (ascending id), its generated
    token ids (-1 after the end) and parsed answer (-1 unparsed, 0 correct, 1 incorrect)."""

    counts: dict[str, Tensor]
    ids: list[int]
    tokens: list[list[int]]
    parsed: list[int]


def summarize_generation(counts: Mapping[str, Tensor], groups: Any = None) -> dict[str, Any]:
    """accuracy (parsed as correct / n: unparsed answers count as wrong), accuracy_parsed (/ n_parsed),
    unparsed_rate, agreement (parsed as the logit difference's label / n) and the counts, over `groups` (all when
    None); ratios of an empty count are None."""
    sel = slice(None) if groups is None else torch.as_tensor(list(groups), dtype=torch.long)
    n, parsed, correct, agree = (int(counts[k][sel].sum()) for k in COUNTS)

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    return {
        "accuracy": ratio(correct, n),
        "accuracy_parsed": ratio(correct, parsed),
        "unparsed_rate": ratio(n - parsed, n),
        "agreement": ratio(agree, n),
        "n": n,
        "n_parsed": parsed,
        "n_correct": correct,
    }
