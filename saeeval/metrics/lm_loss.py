"""Language-modelling metrics over masked token positions: next-token cross-entropy and KL to the clean model.

Two ways in. ``update(logits, ...)`` takes whole ``[B, T, V]`` logits (any caller, tests): it gathers only the
selected positions, a chunk of rows at a time, upcast one chunk at a time, so a large vocabulary (e.g. 256k) never
needs a float32 copy of the whole logits. By default a chunk holds ``CHUNK_ELEMENTS // V`` positions (at least one),
so peak extra memory is about 3 · 4M · 4 bytes ≈ 48 MiB whatever the vocabulary; ``chunk_size`` fixes the number
of positions instead; when every position is selected the chunks are views of the logits, not copies.
The evaluation engine never builds whole logits: saeeval.engine.scoring computes per-position values for all conditions
a chunk at a time (with the kernels of saeeval.metrics.functional.lm_loss) and feeds them with ``add``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from saeeval.metrics.functional.lm_loss import (
    IGNORE,
    CleanRows,
    compute_dtype,
    kl_rows,
    next_token_targets,
    row_chunks,
)
from saeeval.metrics.stats import mean_and_stderr

_F64 = torch.float64
CHUNK_ELEMENTS = 1 << 22  # logits per chunk: 16 MiB in float32


def _check_inputs(logits: Tensor, tokens_or_logits: Tensor, mask: Tensor, other: str) -> None:
    if logits.ndim != 3:
        raise ValueError(f"logits must be [batch, pos, vocab], got shape {tuple(logits.shape)}")
    expect = logits.shape if other == "clean_logits" else logits.shape[:2]
    if tokens_or_logits.shape != expect:
        raise ValueError(f"{other} must have shape {tuple(expect)}, got {tuple(tokens_or_logits.shape)}")
    if mask.shape != logits.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be a bool tensor of shape {tuple(logits.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}"
        )


class _MaskedMean(Metric):
    """Float64 running Σ, Σ² and count of per-position values; compute = Σ / count (NaN when count = 0);
    `stderr()` = the standard error of that mean over positions (saeeval.metrics.stats.mean_and_stderr)."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    total: Tensor
    total_sq: Tensor
    count: Tensor

    def __init__(self, chunk_size: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self.add_state("total", default=torch.zeros((), dtype=_F64), dist_reduce_fx="sum")
        self.add_state("total_sq", default=torch.zeros((), dtype=_F64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=_F64), dist_reduce_fx="sum")
        # `add` counts as an update (torchmetrics' bookkeeping: cached compute reset, update count), like `update`.
        self.add: Callable[..., None] = self._wrap_update(self._add)

    def _rows_per_chunk(self, vocab: int) -> int:
        """Positions per chunk: the fixed ``chunk_size``, or as many as fit in CHUNK_ELEMENTS logits."""
        return self.chunk_size or max(1, CHUNK_ELEMENTS // max(vocab, 1))

    def _add(self, values: Tensor, count: int | Tensor | None = None) -> None:
        """``add(values, count)``: per-position ``values`` into Σ and ``count`` (default: all of them) into the count.
        The chunked scorer (saeeval.engine.scoring) feeds the states this way, with values it computed for several
        metrics at once."""
        self.total += values.sum(dtype=_F64).to(self.total.device)
        self.total_sq += values.to(_F64).square().sum().to(self.total.device)
        if count is None:
            count = values.numel()
        self.count += count.to(self.count.device) if isinstance(count, Tensor) else count

    def compute(self) -> Tensor:
        if self.count == 0:
            return torch.tensor(float("nan"), dtype=_F64, device=self.total.device)
        return self.total / self.count

    def stderr(self) -> Tensor:
        """Standard error of the mean over positions (NaN below 2 positions); positions of one text are
        correlated, so this is a lower bound on the uncertainty across texts."""
        with self.sync_context():  # summed over DDP ranks like compute(), then restored
            return mean_and_stderr(self.count, self.total, self.total_sq)[1].clone()


class NextTokenCrossEntropy(_MaskedMean):
    """Mean next-token cross-entropy over positions whose input AND target tokens are both unmasked.

    ce = mean over (b, t), t ≤ T−2, with mask[b, t] ∧ mask[b, t+1], of −log softmax(logits[b, t])[tokens[b, t+1]].
    Inputs: logits [B, T, V] (any float dtype; computed in ≥ float32), tokens int [B, T], mask bool [B, T].
    Note: sae_lens ``get_recons_loss`` keeps a position when only its *input* is unmasked (mask[:, :-1]); the two
    agree whenever masked tokens never appear as a target of an unmasked input (e.g. BOS only at position 0).
    ``compute()`` → float64 scalar (NaN when no position qualified). higher_is_better: False.
    """

    def update(self, logits: Tensor, tokens: Tensor, mask: Tensor) -> None:
        _check_inputs(logits, tokens, mask, "tokens")
        if logits.shape[1] < 2:
            return
        logits = logits.detach()
        dtype = compute_dtype(logits)
        # Unscored positions get the ignored target (loss 0), so when the mask keeps everything the chunks run over
        # whole rows as views (the last column, 1/T extra, is ignored).
        targets = next_token_targets(tokens, mask)
        select = mask if mask.all() else targets != IGNORE
        for rows, target in row_chunks(select, self._rows_per_chunk(logits.shape[-1]), logits, targets[..., None]):
            loss = F.cross_entropy(rows.to(dtype), target[:, 0], ignore_index=IGNORE, reduction="none")
            self._add(loss, (target != IGNORE).sum())


class PairedCEDifference(_MaskedMean):
    """Mean per-position difference CE_condition − CE_clean over the CE positions, with its standard error: the
    uncertainty of a ce_loss_score denominator (CE_abl − CE_clean), fed by saeeval.engine.scoring with ``add``.
    ``compute()`` → float64 scalar (equals the difference of the two CE means)."""

    def update(self, differences: Tensor, count: int | Tensor | None = None) -> None:
        self._add(differences, count)


class KLDivergence(_MaskedMean):
    """Mean KL(P_clean ‖ P) over unmasked positions: how far a condition's next-token distribution moves.

    kl = mean over (b, t) with mask[b, t] of Σ_v p_clean(v) · (log p_clean(v) − log p(v)), with p = softmax(logits).
    Per position this equals sae_lens ``evals._kl(original_logits=clean, new_logits=logits)``
    (``F.kl_div(log_softmax(new), softmax(original)).sum(-1)``), and like it the mask selects positions by the
    input token. Inputs: clean_logits and logits [B, T, V] (any float dtype; computed in ≥ float32),
    mask bool [B, T]. Terms with p_clean(v) = 0 contribute 0. ``compute()`` → float64 scalar (NaN when empty).
    higher_is_better: False.
    """

    def update(self, clean_logits: Tensor, logits: Tensor, mask: Tensor) -> None:
        _check_inputs(logits, clean_logits, mask, "clean_logits")
        clean_logits, logits = clean_logits.detach(), logits.detach()
        dtype = compute_dtype(clean_logits, logits)
        for clean_rows, rows in row_chunks(mask, self._rows_per_chunk(logits.shape[-1]), clean_logits, logits):
            self._add(kl_rows(CleanRows(clean_rows.to(dtype)), F.log_softmax(rows.to(dtype), dim=-1)))
