"""Per-position kernels of the language-modelling metrics: which positions are scored, their negative log-likelihood,
the clean distribution shared by every condition, KL per row, and gathering selected rows a chunk at a time.

Stateless: the metric classes (saeeval.metrics.lm_loss) and the engine's chunked scorer (saeeval.engine.scoring)
accumulate what these return.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

_F64 = torch.float64
IGNORE = -100
"""The target of a position that is not scored."""


def _flattens_to_view(t: Tensor) -> bool:
    return t.shape[1] <= 1 or t.stride(0) == t.shape[1] * t.stride(1)


def row_chunks(select: Tensor, chunk_size: int, *tensors: Tensor) -> Iterator[tuple[Tensor, ...]]:
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


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype per-row values are computed in: float32, or wider when an input is."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def next_token_targets(tokens: Tensor, mask: Tensor, input_only: bool = False) -> Tensor:
    """``[B, T]`` targets: ``tokens[b, t + 1]`` where ``mask[b, t] ∧ mask[b, t + 1]``, ``IGNORE`` elsewhere (and in
    the last column): the positions NextTokenCrossEntropy scores. ``input_only``: where ``mask[b, t]`` alone, as
    sae_lens and SAEBench count CE (``loss_per_token[mask[:, :-1]]``; compat modes)."""
    targets = torch.full_like(tokens, IGNORE, dtype=torch.long)
    targets[:, :-1] = tokens[:, 1:]
    scored = torch.zeros_like(mask)
    scored[:, :-1] = mask[:, :-1] if input_only else mask[:, :-1] & mask[:, 1:]
    targets[~scored] = IGNORE
    return targets


def nll_rows(log_probs: Tensor, targets: Tensor) -> Tensor:
    """``−log_probs[r, targets[r]]`` per row ``[R]``; 0 where the target is IGNORE."""
    picked = log_probs.gather(1, targets.clamp_min(0)[:, None])[:, 0]
    return torch.where(targets == IGNORE, 0.0, -picked)


class CleanRows:
    """The clean next-token distribution on a chunk of positions, computed once and shared by every condition.

    ``log_p`` and ``p`` are ``[R, V]`` (float32 or wider); ``lse`` is log Σ exp(logits) per row in float64 (the
    pull-back KL in saeeval.engine.scoring subtracts two of them, so they must not be rounded to float32).
    """

    def __init__(self, logits: Tensor, consume: bool = False) -> None:
        """``logits [R, V]``, any float dtype (computed in at least float32); overwritten with the log-probs when
        ``consume`` (the caller's own buffer), else copied."""
        x = logits.to(compute_dtype(logits), copy=not consume)
        top = x.amax(-1, keepdim=True)
        self.p = torch.sub(x, top).exp_()
        total = self.p.sum(-1, keepdim=True)
        self.p.div_(total)
        self.lse = total[:, 0].to(_F64).log_().add_(top[:, 0].to(_F64))
        self.log_p = x.sub_(self.lse[:, None].to(x.dtype))


def kl_rows(clean: CleanRows, log_q: Tensor) -> Tensor:
    """KL(P_clean ‖ Q) per row ``[R]`` = Σ_v p(v)·(log p(v) − log q(v)); ``log_q`` is overwritten. Terms with
    p(v) = 0 count 0 (where log p = −inf the product would be NaN)."""
    terms = torch.sub(clean.log_p, log_q, out=log_q)
    kl = torch.linalg.vecdot(clean.p, terms)
    bad = ~kl.isfinite()
    if bad.any():
        p = clean.p[bad]
        kl[bad] = torch.where(p == 0, 0.0, p * terms[bad]).sum(-1)
    return kl
