"""SAELens / SAEBench reconstruction metrics whose definitions depend on the batch (reported with compat=...).

saeeval's own reconstruction metrics (saeeval.metrics.reconstruction) are global sums, the same for any batch
size. The tools compute these per batch of prompts and then average (sae_lens 6.54 `get_sparsity_and_variance_
metrics`; SAEBench 0.6.0 `sae_bench/evals/core/main.py`, commit 8042bb3828c6340da8d12062324e92b2077c571c), so
here one `update` is one batch, and each value is kept as a sum of per-batch values. With b over batches
(B of them, each with N_b > 0 tokens i; empty batches are skipped), rss_i = ‖x_i − x̂_i‖², N = Σ_b N_b:

  relative_reconstruction_bias_<tool> = mean_b [ mean_i‖x̂_i‖² / mean_i⟨x_i, x̂_i⟩ ]           (both tools)
  explained_variance_legacy_<tool>    = mean over all tokens of 1 − rss_i / ‖x_i − μ_b‖², μ_b the batch mean
  mse_saebench                        = Σ_b mean_i(rss_i) / N        (per-token rss / N_b, then token mean)
  explained_variance_saebench         = 1 − mean_b mean_i(rss_i) / (S − (S/d)²),  S = mean_b mean_i‖x_i‖²
                                        (SAEBench subtracts the square of the mean second moment per dimension,
                                        `torch.cat(mean_act_per_dimension).mean()`, instead of ‖E x‖²)
  l1_saebench                         = mean over tokens of Σ f (no absolute value)

The sums are all-reduced across DDP ranks, but which examples share a batch differs with the number of ranks,
so these values (unlike saeeval's) are not exactly the single-process ones under DDP.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

_F64 = torch.float64
_STATES = ("n", "n_batches", "sum_rrb", "sum_batch_mse", "sum_batch_sq", "sum_legacy", "sum_l1_signed")
TOOLS = ("saelens", "saebench")


class BatchwiseReconstruction(Metric):
    """Per-batch reconstruction sums of one SAE; `compute()` gives the metrics of `tool` (saelens | saebench)."""

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    n: Tensor
    n_batches: Tensor
    sum_rrb: Tensor
    sum_batch_mse: Tensor
    sum_batch_sq: Tensor
    sum_legacy: Tensor
    sum_l1_signed: Tensor

    def __init__(self, tool: str, d_in: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if tool not in TOOLS:
            raise ValueError(f"tool must be one of {TOOLS}, got {tool!r}")
        self.tool, self.d_in = tool, d_in
        for name in _STATES:
            self.add_state(name, default=torch.zeros((), dtype=_F64), dist_reduce_fx="sum")

    def update(self, x: Tensor, x_hat: Tensor, feats: Tensor) -> None:
        """One batch: `x`, `x_hat` `[N_b, d_in]` and `feats` `[N_b, d_sae]` at its counted tokens."""
        if x.shape[0] == 0:
            return
        if feats.is_sparse:
            feats = feats.to_dense()
        dev = self.n.device
        xc, hc = x.detach().to(_F64), x_hat.detach().to(_F64)
        rss = (xc - hc).pow(2).sum(-1)
        sq_in = xc.pow(2).sum(-1)
        self.n += x.shape[0]
        self.n_batches += 1
        self.sum_rrb += (hc.pow(2).sum(-1).mean() / (xc * hc).sum(-1).mean()).to(dev)
        self.sum_batch_mse += rss.mean().to(dev)
        self.sum_batch_sq += sq_in.mean().to(dev)
        self.sum_legacy += (1 - rss / (xc - xc.mean(0)).pow(2).sum(-1)).sum().to(dev)
        self.sum_l1_signed += feats.detach().sum(dtype=_F64).to(dev)

    def compute(self) -> dict[str, Tensor]:
        nan = torch.tensor(float("nan"), dtype=_F64, device=self.n.device)
        nb, n = self.n_batches, self.n
        if n == 0:
            keys = ("relative_reconstruction_bias", "explained_variance_legacy") + (
                ("mse", "explained_variance", "l1") if self.tool == "saebench" else ()
            )
            return {f"{k}_{self.tool}": nan.clone() for k in keys}
        out = {
            "relative_reconstruction_bias": self.sum_rrb / nb,
            "explained_variance_legacy": self.sum_legacy / n,
        }
        if self.tool == "saebench":
            second_moment = self.sum_batch_sq / nb
            d_in = self.d_in
            out["mse"] = self.sum_batch_mse / n
            out["explained_variance"] = 1 - (self.sum_batch_mse / nb) / (second_moment - (second_moment / d_in) ** 2)
            out["l1"] = self.sum_l1_signed / n
        return {f"{k}_{self.tool}": v for k, v in out.items()}
