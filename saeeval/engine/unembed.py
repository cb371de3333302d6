"""The model's unembedding applied a few positions at a time, from the final (normalized) residual stream.

Why not the model's own: TransformerLens 3.9's `Unembed` copies W_U on every call (`W_U.T.contiguous()`, 2.2 GB at
Gemma-2's 256k vocabulary) and its Gemma soft-cap (`cap * tanh(x / cap)`) makes two more full-size copies of the
logits. Here rows `[R, d]` go through one `addmm` against W_U as stored, into one `[R, V]` buffer (fresh, or the
caller's) that the soft-cap then rewrites in place; the caller picks R, so peak memory follows the chunk, not B·T·V.

Logits come out in float32 (float64 for a float64 model) whatever the model's dtype, and outside autocast:
- a bf16/fp16 model's logits are not rounded to its dtype. Its residual and W_U are (they are the model), but the
  products of two bf16 numbers are exact in float32, so only the float32 sum rounds; rounding the logits themselves
  would cost 0.125 at a logit of 20 (one bf16 step), coarsen answer logit differences and put a floor under KL.
  On CUDA one matmul with a float32 output (`torch.mm(..., out_dtype=torch.float32)`) does it; elsewhere, or where
  that kernel is missing, W_U is converted a slice of the vocabulary at a time (no full float32 copy of it).
- under `*-mixed` precision the caller's forward runs in autocast, which would run these matmuls in bf16/fp16.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cache
from typing import Any

import torch
from torch import Tensor

HALF = (torch.bfloat16, torch.float16)
SLICE_ELEMENTS = 1 << 24
"""Elements of W_U converted to float32 at a time for a half-precision model (64 MiB)."""


def no_autocast(device: torch.device) -> AbstractContextManager[Any]:
    """Autocast off on `device`'s type: scoring keeps the dtypes it asks for under `*-mixed` precision."""
    return torch.autocast(device_type=device.type, enabled=False)


def logits_dtype(weight: Tensor) -> torch.dtype:
    """float32, or float64 for a float64 model: the dtype logits and answer columns are computed in."""
    return torch.promote_types(weight.dtype, torch.float32)


@cache
def _float32_out_mm(device: torch.device) -> bool:
    """Whether `torch.mm(bf16, bf16, out_dtype=torch.float32)` runs on `device` (CUDA kernels in recent torch)."""
    if device.type != "cuda":
        return False
    try:
        a = torch.ones(2, 2, device=device, dtype=torch.bfloat16)
        return torch.mm(a, a, out_dtype=torch.float32).dtype == torch.float32
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def half_logits(rows: Tensor, weight: Tensor, bias: Tensor, out: Tensor | None = None) -> Tensor:
    """`rows @ weight + bias` `[R, V]` in float32 for half-precision `rows [R, d]` and `weight [d, V]` (scoring
    runs under `no_grad`: the slices are written into one buffer, which autograd cannot follow)."""
    if _float32_out_mm(rows.device):
        return torch.mm(rows, weight, out_dtype=torch.float32).add_(bias.float())
    logits = out if out is not None else rows.new_empty(rows.shape[0], weight.shape[1], dtype=torch.float32)
    rows32 = rows.float()
    step = max(1, SLICE_ELEMENTS // max(1, weight.shape[0]))
    for start in range(0, weight.shape[1], step):
        cols = slice(start, start + step)
        torch.addmm(bias[cols].float(), rows32, weight[:, cols].float(), out=logits[:, cols])
    return logits


class Unembed:
    """`logits = softcap(resid @ W_U + b_U)` for final residual rows that already went through ln_final.

    Reads W_U / b_U from the model on every call, so it follows the model when it moves device or dtype.
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    @property
    def weight(self) -> Tensor:
        """W_U `[d_model, d_vocab]`, as the model stores it (never copied)."""
        return self.model.unembed.W_U

    @property
    def bias(self) -> Tensor:
        return self.model.unembed.b_U

    @property
    def d_vocab(self) -> int:
        return int(self.weight.shape[1])

    @property
    def soft_cap(self) -> float | None:
        """Gemma-2's output soft-cap, None when the model has none (TransformerLens: any value <= 0 is off)."""
        cap = getattr(self.model.cfg, "output_logits_soft_cap", None)
        return float(cap) if cap is not None and cap > 0 else None

    def __call__(self, resid: Tensor, out: Tensor | None = None) -> Tensor:
        """Logits `[..., V]` for `resid [..., d]` in `logits_dtype` (one matmul, soft-cap in place), written into
        `out` (`[R, V]`, R = the rows of `resid`) when given: reusing one buffer across conditions saves the page
        faults of a fresh 20 MB allocation per call (~4 ms on CPU at 1024 × 5000)."""
        w = self.weight
        rows = resid.reshape(-1, w.shape[0]).to(device=w.device, dtype=w.dtype)
        with no_autocast(w.device):
            if w.dtype in HALF:
                logits = half_logits(rows, w, self.bias, out)
            else:
                logits = torch.addmm(self.bias, rows, w, out=out)
            return self._cap_(logits).view(*resid.shape[:-1], w.shape[1])

    def columns(self, resid: Tensor, ids: Tensor) -> Tensor:
        """`logits[n, ids[n]]` in `logits_dtype` for rows `resid [N, d]` without the other V − 1 logits (answer
        tokens): the residual is taken in the model's dtype, as the full logits would see it, the dot products not
        rounded to it."""
        w = self.weight
        dtype = logits_dtype(w)
        rows = resid.to(device=w.device, dtype=w.dtype).to(dtype)
        ids = ids.to(w.device)
        with no_autocast(w.device):
            return self._cap_(torch.linalg.vecdot(rows, w[:, ids].T.to(dtype)) + self.bias[ids].to(dtype))

    def pullback(self, probs: Tensor) -> Tensor:
        """`probs @ W_Uᵀ` `[R, d]`: with it Σ_v p(v)·(logit_a(v) − logit_b(v)) = (resid_a − resid_b)·u for any two
        residuals (b_U cancels), which is exact only without a soft-cap (the caller checks `soft_cap`)."""
        w = self.weight
        with no_autocast(w.device):
            return probs.to(w.dtype) @ w.T

    def _cap_(self, logits: Tensor) -> Tensor:
        cap = self.soft_cap
        return logits if cap is None else logits.div_(cap).tanh_().mul_(cap)
