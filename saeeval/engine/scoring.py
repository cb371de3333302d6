"""CE, KL and answer logits of every condition, a chunk of positions at a time: logits are never held whole.

Why: at a 256k vocabulary one condition's `[B, T, V]` logits are GBs, and the clean logits used to stay alive
beside every condition's. The engine hands over final residual streams (`[B, T, d]`, after ln_final) instead;
per chunk of positions the clean log-probabilities are computed once, then each condition's chunk is unembedded
(saeeval.engine.unembed), scored into its CE and KL states and dropped. Peak memory follows the chunk.

KL takes a pull-back form when it is exact (no soft-cap, float32/64 weights): logits are resid·W_U + b_U, so
Σ_v p(v)·(clean_logit(v) − logit(v)) = (resid_clean − resid)·u with u = p_clean·W_Uᵀ (once per chunk), and
KL(P‖Q) = (resid_clean − resid)·u + Σp · (logsumexp(logits) − logsumexp(clean_logits)): a condition costs its
matmul and one log-sum-exp, and no term is a difference of large numbers. Otherwise (Gemma's soft-cap, half
precision) it is the direct Σ p·(log p − log q) on the log-softmax of float32 logits (saeeval.engine.unembed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from saeeval.engine.unembed import Unembed, no_autocast
from saeeval.metrics.functional.lm_loss import IGNORE, CleanRows, kl_rows, next_token_targets, nll_rows, row_chunks
from saeeval.metrics.lm_loss import KLDivergence, NextTokenCrossEntropy, PairedCEDifference
from saeeval.metrics.non_finite import LOGITS, NonFinite

_F64 = torch.float64
CPU_CHUNK_ELEMENTS = 1 << 24
"""Logits per chunk on CPU (64 MiB in float32). Fewer rows make the W_U matmul memory-bound: at V = 256k,
d = 2304 one thread measured 88 ms per position with 16-row chunks and 42 ms with 64-row chunks."""
GPU_CHUNK_SHARE = 0.25
"""Share of free GPU memory the logits of one chunk may take (about 4 [R, V] float32 buffers live at once)."""


def rows_per_chunk(d_vocab: int, device: torch.device | str) -> int:
    """Positions per chunk: CPU_CHUNK_ELEMENTS logits on CPU (64 positions at V = 256k, about 4 × 64 MiB live);
    on CUDA as many as fit in GPU_CHUNK_SHARE of the free memory, at least 64."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(64, int(free * GPU_CHUNK_SHARE) // (4 * 4 * d_vocab))
    return max(1, CPU_CHUNK_ELEMENTS // max(d_vocab, 1))


def _pullback_exact(unembed: Unembed) -> bool:
    return unembed.soft_cap is None and unembed.weight.dtype in (torch.float32, torch.float64)


def _logsumexp_(logits: Tensor) -> Tensor:
    """Row-wise log Σ exp `[R]`, returned in float64 (KL subtracts two of them: float32 rounding of the result
    would cost ~1e-7 nats per row), overwriting `logits` (one buffer, no temporaries of its size)."""
    top = logits.amax(-1, keepdim=True)
    total = logits.sub_(top).exp_().sum(-1)
    return total.to(_F64).log_().add_(top[:, 0].to(_F64))


@dataclass(frozen=True)
class LMStates:
    """One condition's language-modelling states that `score_lm` feeds: its CE, its KL to clean (None for clean
    itself), optionally the count of scored positions whose values came out non-finite, and the paired
    per-position CE change against clean (for its standard error)."""

    ce: NextTokenCrossEntropy
    kl: KLDivergence | None = None
    non_finite: NonFinite | None = None
    ce_delta: PairedCEDifference | None = None


@torch.no_grad()
def score_lm(
    unembed: Unembed,
    clean: Tensor,
    tokens: Tensor,
    mask: Tensor,
    conditions: Sequence[tuple[Tensor, LMStates]],
    clean_states: LMStates | None = None,
    *,
    chunk: int | None = None,
    input_only: bool = False,
) -> None:
    """Update each condition's states from its final residual `[B, T, d]` against the clean one `clean`, and
    `clean_states.ce` (if given) with the clean CE.

    Same definitions as NextTokenCrossEntropy.update / KLDivergence.update on whole logits: CE over positions whose
    input and target are unmasked (`input_only`: whose input is, as sae_lens counts it), KL over unmasked positions.
    Non-finite counters see the per-row CE and KL values only.
    """
    if any(states.kl is None for _, states in conditions):
        raise ValueError("every spliced condition needs a KL state (only the clean states have none)")
    if clean_states is None and not conditions:
        return
    mask = mask.to(clean.device)
    targets = next_token_targets(tokens.to(clean.device), mask, input_only)
    rows = chunk or rows_per_chunk(unembed.d_vocab, unembed.weight.device)
    states = [s for _, s in conditions]
    with no_autocast(unembed.weight.device):  # `*-mixed` precision: the log-softmax and KL sums stay float32
        for h_clean, target, *hs in row_chunks(mask, rows, clean, targets[..., None], *(f for f, _ in conditions)):
            _score_chunk(unembed, h_clean, target[:, 0], list(zip(hs, states, strict=True)), clean_states)


def _score_chunk(
    unembed: Unembed,
    h_clean: Tensor,
    target: Tensor,
    conditions: Sequence[tuple[Tensor, LMStates]],
    clean_states: LMStates | None,
) -> None:
    """One chunk of rows (a function, so its [R, V] buffers are freed before the next chunk's are made)."""
    target = target.to(unembed.weight.device)
    valid = target != IGNORE
    n_valid = valid.sum()
    ref = CleanRows(unembed(h_clean), consume=True)
    wants_clean_nll = clean_states is not None or any(s.ce_delta is not None for _, s in conditions)
    clean_nll = nll_rows(ref.log_p, target) if wants_clean_nll else None
    if clean_states is not None:
        assert clean_nll is not None  # wants_clean_nll: clean_states is given
        clean_states.ce.add(clean_nll, n_valid)
        if clean_states.non_finite is not None:
            clean_states.non_finite.update(LOGITS, clean_nll)
    if not conditions:
        return
    pullback = _pullback_exact(unembed)
    if pullback:
        u = unembed.pullback(ref.p)
        mass = ref.p.sum(-1).to(_F64)
        h_clean = h_clean.to(u.device, u.dtype)
    buf = None  # one [R, V] buffer for every condition's logits in this chunk
    for h, states in conditions:
        logits = buf = unembed(h, out=buf)
        if pullback:
            picked = logits.gather(1, target.clamp_min(0)[:, None])[:, 0].to(_F64)
            lse = _logsumexp_(logits)
            ce_rows = torch.where(valid, lse - picked, 0.0)
            moved = torch.linalg.vecdot(h_clean - h.to(u.device, u.dtype), u).to(_F64)
            kl_vals = moved + mass * (lse - ref.lse)
        else:
            log_q = F.log_softmax(logits.to(ref.log_p.dtype), dim=-1)
            ce_rows = nll_rows(log_q, target)
            kl_vals = kl_rows(ref, log_q)
        states.ce.add(ce_rows, n_valid)
        states.kl.add(kl_vals)  # type: ignore[union-attr]  # score_lm checked every condition has one
        if states.ce_delta is not None:
            states.ce_delta.add(ce_rows.to(_F64) - clean_nll.to(_F64), n_valid)  # type: ignore[union-attr]
        if states.non_finite is not None:
            states.non_finite.update(LOGITS, ce_rows + kl_vals)


def answer_rows(
    final: Tensor, positions: Mapping[str, Tensor] | None, answer_position: str | None, copies: int = 1
) -> Tensor:
    """`[copies·B, 1, d]`: the final residual where the task's answer is predicted, from `final` `[copies·B, T, d]`
    (`copies` conditions' rows stacked): the last column of left-padded rows when `answer_position` is None, else
    the column of the task's named position in each row."""
    if answer_position is None:
        return final[:, -1:]
    if positions is None:
        raise ValueError(f"the answer is read at position {answer_position!r}, but the batch names no positions")
    col = positions[answer_position].to(final.device).repeat(copies)
    return final[torch.arange(col.shape[0], device=final.device), col][:, None]


def answer_logit_diff(unembed: Unembed, final: Tensor, correct: Tensor, incorrect: Tensor) -> Tensor:
    """logit(correct) − logit(incorrect) at the last column of left-padded rows, float32 `[B]`, from the final
    residual `[B, T, d]` without the full logits (two columns of W_U per row)."""
    last = final[:, -1]
    return unembed.columns(last, correct).float() - unembed.columns(last, incorrect).float()
