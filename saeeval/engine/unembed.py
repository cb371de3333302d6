"""The model's unembedding applied a few positions at a time, from the final (normalized) residual stream.

Why not the model's own: TransformerLens 3.9's `Unembed` copies W_U on every call (`W_U.T.contiguous()`, 2.2 GB at
Gemma-2's 256k vocabulary) and its Gemma soft-cap (`cap * tanh(x / cap)`) makes two more full-size copies of the
logits. Here rows `[R, d]` go through one `addmm` against W_U as stored, into one `[R, V]` buffer (fresh, or the
caller's) that the soft-cap then rewrites in place; the caller picks R, so peak memory follows the chunk, not B·T·V.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


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
        """Logits `[..., V]` for `resid [..., d]` in the model's dtype (one matmul, soft-cap in place), written into
        `out` (`[R, V]`, R = the rows of `resid`) when given: reusing one buffer across conditions saves the page
        faults of a fresh 20 MB allocation per call (~4 ms on CPU at 1024 × 5000)."""
        w = self.weight
        rows = resid.reshape(-1, w.shape[0]).to(device=w.device, dtype=w.dtype)
        logits = torch.addmm(self.bias, rows, w, out=out)
        return self._cap_(logits).view(*resid.shape[:-1], w.shape[1])

    def columns(self, resid: Tensor, ids: Tensor) -> Tensor:
        """`logits[n, ids[n]]` for rows `resid [N, d]` without the other V − 1 logits (answer tokens)."""
        w = self.weight
        rows = resid.to(device=w.device, dtype=w.dtype)
        ids = ids.to(w.device)
        return self._cap_(torch.linalg.vecdot(rows, w[:, ids].T) + self.bias[ids])

    def pullback(self, probs: Tensor) -> Tensor:
        """`probs @ W_Uᵀ` `[R, d]`: with it Σ_v p(v)·(logit_a(v) − logit_b(v)) = (resid_a − resid_b)·u for any two
        residuals (b_U cancels), which is exact only without a soft-cap (the caller checks `soft_cap`)."""
        w = self.weight
        return probs.to(w.dtype) @ w.T

    def _cap_(self, logits: Tensor) -> Tensor:
        cap = self.soft_cap
        return logits if cap is None else logits.div_(cap).tanh_().mul_(cap)
