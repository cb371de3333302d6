"""Language-modelling metrics over masked token positions: next-token cross-entropy and KL to the clean model.

Both gather only the selected positions, a chunk of rows at a time, and upcast one chunk at a time, so a large
vocabulary (e.g. 256k) never needs a float32 copy of the whole [B, T, V] logits. By default a chunk holds
``CHUNK_ELEMENTS // V`` positions (at least one), so peak extra memory is about 3 · 4M · 4 bytes ≈ 48 MiB whatever
the vocabulary; ``chunk_size`` fixes the number of positions instead.
When every position is selected (the common no-mask case) the chunks are views of the logits, not copies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

_F64 = torch.float64
_IGNORE = -100
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


def _flattens_to_view(t: Tensor) -> bool:
    return t.shape[1] <= 1 or t.stride(0) == t.shape[1] * t.stride(1)


def _row_chunks(select: Tensor, chunk_size: int, *tensors: Tensor) -> Iterator[tuple[Tensor, ...]]:
    """The rows ``t[b, t]`` (each tensor [B, T, ...]) at the True entries of ``select`` [B, T], ``chunk_size`` at a
    time, in row-major order; views of ``t.flatten(0, 1)`` when every entry is selected (no gather copy)."""
    if select.all() and all(_flattens_to_view(t) for t in tensors):
        flat = [t.flatten(0, 1) for t in tensors]
        for start in range(0, select.numel(), chunk_size):
            yield tuple(f[start : start + chunk_size] for f in flat)
        return
    b_idx, t_idx = select.nonzero(as_tuple=True)
    for start in range(0, b_idx.numel(), chunk_size):
        b, t = b_idx[start : start + chunk_size], t_idx[start : start + chunk_size]
        yield tuple(x[b, t] for x in tensors)


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


class _MaskedMean(Metric):
    """Float64 running Σ and count of per-position values; compute = Σ / count (NaN when count = 0)."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    total: Tensor
    count: Tensor

    def __init__(self, chunk_size: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self.add_state("total", default=torch.zeros((), dtype=_F64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=_F64), dist_reduce_fx="sum")

    def _rows_per_chunk(self, vocab: int) -> int:
        """Positions per chunk: the fixed ``chunk_size``, or as many as fit in CHUNK_ELEMENTS logits."""
        return self.chunk_size or max(1, CHUNK_ELEMENTS // max(vocab, 1))

    def _accumulate(self, values: Tensor, count: int | None = None) -> None:
        """Add ``values`` to Σ and ``count`` (default: all of them) to the count."""
        self.total += values.sum(dtype=_F64).to(self.total.device)
        self.count += values.numel() if count is None else count

    def compute(self) -> Tensor:
        if self.count == 0:
            return torch.tensor(float("nan"), dtype=_F64, device=self.total.device)
        return self.total / self.count


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
        dtype = _compute_dtype(logits)
        # Position t is scored against tokens[t + 1]; unscored positions get the ignored target (loss 0), so when
        # the mask keeps everything the chunks run over whole rows as views (the last column, 1/T extra, is ignored).
        targets = torch.full_like(tokens, _IGNORE, dtype=torch.long)
        targets[:, :-1] = tokens[:, 1:]
        scored = torch.zeros_like(mask)
        scored[:, :-1] = mask[:, :-1] & mask[:, 1:]
        targets[~scored] = _IGNORE
        select = mask if mask.all() else scored
        for rows, target in _row_chunks(select, self._rows_per_chunk(logits.shape[-1]), logits, targets[..., None]):
            loss = F.cross_entropy(rows.to(dtype), target[:, 0], ignore_index=_IGNORE, reduction="none")
            self._accumulate(loss, int((target != _IGNORE).sum()))


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
        dtype = _compute_dtype(clean_logits, logits)
        for clean_rows, rows in _row_chunks(mask, self._rows_per_chunk(logits.shape[-1]), clean_logits, logits):
            log_p_clean = F.log_softmax(clean_rows.to(dtype), dim=-1)
            terms = F.log_softmax(rows.to(dtype), dim=-1).neg_().add_(log_p_clean)  # log p_clean − log p
            p_clean = log_p_clean.exp_()  # in place: one [chunk, V] buffer fewer
            kl = terms.mul_(p_clean).sum(-1)
            bad = ~kl.isfinite()
            if bad.any():  # only where p_clean = 0 somewhere (0 · −inf = NaN): those terms are 0 by definition
                kl[bad] = torch.where(p_clean[bad] == 0, 0.0, terms[bad]).sum(-1)
            self._accumulate(kl)
