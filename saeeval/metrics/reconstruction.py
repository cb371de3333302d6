"""How well one spliced SAE reconstructs its input and how sparse its code is (sae_lens 6.54.12 definitions)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from saeeval.metrics.stats import safe_ratio

_F64 = torch.float64
CHUNK_ELEMENTS = 1 << 22
"""On CPU rows are processed in chunks of about this many elements, so the float64 upcast stays small (32 MiB)."""
GPU_CHUNK_ELEMENTS = 1 << 25
"""On a GPU chunks are 8× larger (256 MiB per float64 temporary): at d_sae 131k a 32-row chunk would cost one kernel
launch per few microseconds of work, ~1,000 launches per SAE and batch."""


def chunk_rows(width: int, device: torch.device) -> int:
    """Rows per chunk for `[N, width]` inputs on `device`."""
    elements = GPU_CHUNK_ELEMENTS if device.type == "cuda" else CHUNK_ELEMENTS
    return max(1, elements // max(1, width))


_SCALARS = (
    "n",
    "sum_sq_err",
    "sum_sq_norm_in",
    "sum_sq_norm_out",
    "sum_dot",
    "sum_norm_in",
    "sum_norm_out",
    "sum_cos",
    "sum_l2_ratio",
    "sum_l0",
    "sum_l1",
)


class Reconstruction(Metric):
    """Reconstruction quality and sparsity of an SAE over the unmasked tokens t = 1..N it was applied to.

    Inputs: ``update(x [N, d_in], x_hat [N, d_in], feats [N, d_sae])`` — the caller selects unmasked tokens and
    flattens hook_z heads; any float dtype (accumulated in float64, chunked by rows).

    ``compute()`` → dict of float64 scalars (NaN when N = 0):
      mse = Σ_t‖x_t − x̂_t‖² / N                                  (lower is better)
      explained_variance = 1 − mse / (Σ_t‖x_t‖²/N − ‖Σ_t x_t/N‖²) (higher; sae_lens ≥ 6.45.1 global definition:
                            if the variance < 1e-10 it is 1.0 when mse < 1e-10 else 0.0)
      cosine_similarity = mean_t ⟨x, x̂⟩ / (‖x‖‖x̂‖)                (higher; a zero vector counts as cos 0)
      l2_norm_in = mean_t ‖x‖, l2_norm_out = mean_t ‖x̂‖
      l2_ratio = mean_t ‖x̂‖ / ‖x‖ (‖x‖ < 1e-4 replaced by 1, as sae_lens)   (closer to 1 is better)
      relative_reconstruction_bias = E‖x̂‖² / E⟨x, x̂⟩ globally (arXiv:2404.16014 eq. 10; < 1 = shrinkage; NaN when
                            |E⟨x, x̂⟩| ≤ 1e-8·√(E‖x‖²·E‖x̂‖²)). sae_lens averages per-batch ratios instead, so the
                            two agree for a single batch only.
      l0 = mean_t #{i : f_ti ≠ 0}, l1 = mean_t Σ_i |f_ti|          (lower = sparser)
      dead_fraction = share of the d_sae features never non-zero   (lower is better)
      n_tokens = N
    All states are float64 sums (``dist_reduce_fx="sum"``), so the DDP result equals the single-process one.
    higher_is_better: None (mixed; see per key above).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    n: Tensor
    sum_sq_err: Tensor
    sum_sq_norm_in: Tensor
    sum_sq_norm_out: Tensor
    sum_dot: Tensor
    sum_norm_in: Tensor
    sum_norm_out: Tensor
    sum_cos: Tensor
    sum_l2_ratio: Tensor
    sum_l0: Tensor
    sum_l1: Tensor
    sum_x: Tensor
    fire_counts: Tensor

    def __init__(self, d_in: int, d_sae: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if d_in < 1 or d_sae < 1:
            raise ValueError(f"d_in and d_sae must be >= 1, got {d_in}, {d_sae}")
        self.d_in, self.d_sae = d_in, d_sae
        for name in _SCALARS:
            self.add_state(name, default=torch.zeros((), dtype=_F64), dist_reduce_fx="sum")
        self.add_state("sum_x", default=torch.zeros(d_in, dtype=_F64), dist_reduce_fx="sum")
        self.add_state("fire_counts", default=torch.zeros(d_sae, dtype=_F64), dist_reduce_fx="sum")

    def update(self, x: Tensor, x_hat: Tensor, feats: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.d_in or x_hat.shape != x.shape:
            raise ValueError(
                f"x and x_hat must both be [N, {self.d_in}], got {tuple(x.shape)} and {tuple(x_hat.shape)}"
            )
        if feats.shape != (x.shape[0], self.d_sae):
            raise ValueError(f"feats must be [{x.shape[0]}, {self.d_sae}], got {tuple(feats.shape)}")
        if x.shape[0] == 0:
            return
        if feats.is_sparse:
            feats = feats.to_dense()
        self.n += x.shape[0]
        self._update_dense(x.detach(), x_hat.detach())
        self._update_sparsity(feats.detach())

    def _update_dense(self, x: Tensor, x_hat: Tensor) -> None:
        rows = chunk_rows(self.d_in, x.device)
        dev = self.n.device
        for start in range(0, x.shape[0], rows):
            xc = x[start : start + rows].to(_F64)
            hc = x_hat[start : start + rows].to(_F64)
            sq_in, sq_out, dot = (xc * xc).sum(-1), (hc * hc).sum(-1), (xc * hc).sum(-1)
            norm_in, norm_out = sq_in.sqrt(), sq_out.sqrt()
            cos = dot / (norm_in.clamp_min(1e-8) * norm_out.clamp_min(1e-8))
            ratio = norm_out / torch.where(norm_in.abs() < 1e-4, torch.ones_like(norm_in), norm_in)
            self.sum_sq_err += (xc - hc).pow(2).sum().to(dev)
            self.sum_sq_norm_in += sq_in.sum().to(dev)
            self.sum_sq_norm_out += sq_out.sum().to(dev)
            self.sum_dot += dot.sum().to(dev)
            self.sum_norm_in += norm_in.sum().to(dev)
            self.sum_norm_out += norm_out.sum().to(dev)
            self.sum_cos += cos.sum().to(dev)
            self.sum_l2_ratio += ratio.sum().to(dev)
            self.sum_x += xc.sum(0).to(dev)

    def _update_sparsity(self, feats: Tensor) -> None:
        rows = chunk_rows(self.d_sae, feats.device)
        dev = self.n.device
        for start in range(0, feats.shape[0], rows):
            fc = feats[start : start + rows]
            # Counts are exact integers (int64); L1 is summed per row in the features' dtype (at least float32,
            # d_sae terms) and across rows in float64: a float64 sum over every element is ~2× slower on CPU.
            fired = (fc != 0).sum(0)
            self.fire_counts += fired.to(device=dev, dtype=_F64)
            self.sum_l0 += fired.sum().to(device=dev, dtype=_F64)
            row_l1 = fc.abs().sum(-1, dtype=torch.promote_types(fc.dtype, torch.float32))
            self.sum_l1 += row_l1.sum(dtype=_F64).to(dev)

    def compute(self) -> dict[str, Tensor]:
        n = self.n
        nan = torch.tensor(float("nan"), dtype=_F64, device=n.device)
        if n == 0:
            keys = (
                "mse",
                "explained_variance",
                "cosine_similarity",
                "l2_norm_in",
                "l2_norm_out",
                "l2_ratio",
                "relative_reconstruction_bias",
                "l0",
                "l1",
                "dead_fraction",
            )
            return {**{k: nan.clone() for k in keys}, "n_tokens": n.clone()}
        mse = self.sum_sq_err / n
        mean_sq_in, mean_sq_out = self.sum_sq_norm_in / n, self.sum_sq_norm_out / n
        variance = mean_sq_in - (self.sum_x / n).pow(2).sum()
        if variance < 1e-10:
            explained_variance = torch.ones_like(mse) if mse < 1e-10 else torch.zeros_like(mse)
        else:
            explained_variance = 1 - mse / variance
        return {
            "mse": mse,
            "explained_variance": explained_variance,
            "cosine_similarity": self.sum_cos / n,
            "l2_norm_in": self.sum_norm_in / n,
            "l2_norm_out": self.sum_norm_out / n,
            "l2_ratio": self.sum_l2_ratio / n,
            "relative_reconstruction_bias": safe_ratio(
                mean_sq_out, self.sum_dot / n, scale=(mean_sq_in * mean_sq_out).sqrt()
            ),
            "l0": self.sum_l0 / n,
            "l1": self.sum_l1 / n,
            "dead_fraction": (self.fire_counts == 0).to(_F64).mean(),
            "n_tokens": n.clone(),
        }
