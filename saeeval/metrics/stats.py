"""Shared statistics: mean/stderr/CI from running sums, Wilson intervals, guarded cross-condition ratios.

The metric classes keep only sums (so DDP sync is an exact all-reduce); these functions turn the synced sums into
reported numbers. Tensor functions work elementwise on float64 tensors of any shape (scalars or per-group vectors)
and return NaN where a quantity is undefined (n = 0, stderr with n < 2); the pure ratio functions take the
already-computed condition values and return ``None`` where the ratio is undefined, never inf.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

Z_95 = 1.959963984540054
"""Two-sided 95% standard-normal quantile (Φ⁻¹(0.975)), used for every confidence interval here."""

RATIO_EPS = 1e-8
"""|denominator| below this makes a cross-condition ratio undefined (reported as null)."""

RELIABLE_CI_SHARE = 0.5
"""A score ratio (logit_diff_recovered, ce_loss_score, kl_div_score) is flagged unreliable when the 95% CI
half-width of its denominator, the ablation baseline's effect, is more than this share of the denominator:
|denominator| < Z_95 · stderr / 0.5 ≈ 3.9 standard errors. The denominator is then known only to within ±50%
(at 95%), so the ratio could as well be half or double its value: an ablation that barely moves the metric."""
UNRELIABLE_Z = Z_95 / RELIABLE_CI_SHARE


def _nan_like(x: Tensor) -> Tensor:
    return torch.full_like(x, float("nan"))


def mean_and_stderr(n: Tensor, total: Tensor, total_sq: Tensor) -> tuple[Tensor, Tensor]:
    """Sample mean and its standard error from count, Σv and Σv² (float64 tensors of equal shape).

    stderr = s / √n with s² = (Σv² − (Σv)²/n) / (n − 1) (ddof = 1), clamped at 0 against rounding.
    mean is NaN where n = 0; stderr is NaN where n < 2.
    """
    safe_n = torch.where(n > 0, n, torch.ones_like(n))
    mean = torch.where(n > 0, total / safe_n, _nan_like(total))
    dof = torch.where(n > 1, n - 1, torch.ones_like(n))
    var = ((total_sq - total * total / safe_n) / dof).clamp_min(0.0)
    stderr = torch.where(n > 1, torch.sqrt(var / safe_n), _nan_like(total))
    return mean, stderr


def normal_interval(mean: Tensor, stderr: Tensor, z: float = Z_95) -> tuple[Tensor, Tensor]:
    """95% normal-approximation confidence interval mean ± z·stderr (NaN where stderr is NaN)."""
    return mean - z * stderr, mean + z * stderr


def proportion_and_stderr(k: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
    """Share p = k/n and its binomial standard error √(p(1−p)/n); NaN where n = 0."""
    safe_n = torch.where(n > 0, n, torch.ones_like(n))
    p = torch.where(n > 0, k / safe_n, _nan_like(k))
    stderr = torch.sqrt((p * (1 - p)).clamp_min(0.0) / safe_n)
    return p, stderr


def wilson_interval(k: Tensor, n: Tensor, z: float = Z_95) -> tuple[Tensor, Tensor]:
    """Wilson score interval for a proportion k/n: stays inside [0, 1] and is sane at p = 0 or 1; NaN where n = 0.

    centre = (p + z²/2n) / (1 + z²/n), half-width = z/(1 + z²/n) · √(p(1−p)/n + z²/4n²).
    """
    p, _ = proportion_and_stderr(k, n)
    safe_n = torch.where(n > 0, n, torch.ones_like(n))
    z2 = z * z
    denom = 1 + z2 / safe_n
    centre = (p + z2 / (2 * safe_n)) / denom
    half = z / denom * torch.sqrt((p * (1 - p)).clamp_min(0.0) / safe_n + z2 / (4 * safe_n * safe_n))
    return (centre - half).clamp(0.0, 1.0), (centre + half).clamp(0.0, 1.0)


def summarize_logit_diffs(n: Tensor, total: Tensor, total_sq: Tensor, n_correct: Tensor) -> dict[str, Tensor]:
    """Every reported logit-difference statistic from the four running sums (elementwise over any shape).

    Returns logit_diff, logit_diff_stderr, logit_diff_ci_low/high (normal, 95%), accuracy (share > 0),
    accuracy_stderr, accuracy_ci_low/high (Wilson, 95%), error_rate (1 − accuracy) and n.
    """
    mean, stderr = mean_and_stderr(n, total, total_sq)
    ld_low, ld_high = normal_interval(mean, stderr)
    acc, acc_stderr = proportion_and_stderr(n_correct, n)
    acc_low, acc_high = wilson_interval(n_correct, n)
    return {
        "logit_diff": mean,
        "logit_diff_stderr": stderr,
        "logit_diff_ci_low": ld_low,
        "logit_diff_ci_high": ld_high,
        "accuracy": acc,
        "accuracy_stderr": acc_stderr,
        "accuracy_ci_low": acc_low,
        "accuracy_ci_high": acc_high,
        "error_rate": 1 - acc,
        "n": n,
    }


def safe_ratio(numerator: Tensor, denominator: Tensor, scale: Tensor | None = None, eps: float = RATIO_EPS) -> Tensor:
    """numerator / denominator, NaN where |denominator| ≤ eps·scale (scale defaults to 1) or anything is non-finite."""
    bound = eps if scale is None else eps * scale
    ok = (denominator.abs() > bound) & torch.isfinite(numerator) & torch.isfinite(denominator)
    safe_den = torch.where(ok, denominator, torch.ones_like(denominator))
    return torch.where(ok, numerator / safe_den, _nan_like(numerator))


def ill_conditioned(denominator: float | None, stderr: float | None) -> bool:
    """Whether a ratio over `denominator` (with standard error `stderr`) is unreliable: |denominator| <
    UNRELIABLE_Z · stderr, or the stderr is unknown (fewer than 2 examples/positions). False when there is no
    denominator (the ratio is null then)."""
    den = _as_float(denominator)
    if den is None:
        return False
    se = _as_float(stderr)
    return se is None or abs(den) < UNRELIABLE_Z * se


def _as_float(value: float | Tensor | None) -> float | None:
    if value is None:
        return None
    out = float(value.item()) if isinstance(value, Tensor) else float(value)
    return out if math.isfinite(out) else None


def _guarded_ratio(numerator: float, denominator: float) -> float | None:
    if abs(denominator) < RATIO_EPS:
        return None
    out = numerator / denominator
    return out if math.isfinite(out) else None


def ce_loss_score(
    clean: float | Tensor | None, spliced: float | Tensor | None, ablated: float | Tensor | None
) -> float | None:
    """Share of the CE loss increase from ablation that splicing the SAE avoids (sae_lens `ce_loss_score`).

    (CE_abl − CE_spliced) / (CE_abl − CE_clean); 1 = as good as clean, 0 = as bad as ablation; higher is better.
    None when any input is missing/non-finite or |CE_abl − CE_clean| < 1e-8.
    """
    return recovered(clean, spliced, ablated)


def kl_div_score(spliced: float | Tensor | None, ablated: float | Tensor | None) -> float | None:
    """sae_lens `kl_div_score` = (KL_abl − KL_spliced) / KL_abl; higher is better.

    None when any input is missing/non-finite or |KL_abl| < 1e-8.
    """
    s, a = _as_float(spliced), _as_float(ablated)
    if s is None or a is None:
        return None
    return _guarded_ratio(a - s, a)


def recovered(
    clean: float | Tensor | None, spliced: float | Tensor | None, ablated: float | Tensor | None
) -> float | None:
    """Share of the clean-vs-ablated gap that the spliced model recovers: (v_spliced − v_abl) / (v_clean − v_abl).

    Used for logit_diff_recovered; algebraically the same as ce_loss_score. Higher is better (1 = clean).
    None when any input is missing/non-finite or |v_clean − v_abl| < 1e-8.
    """
    c, s, a = _as_float(clean), _as_float(spliced), _as_float(ablated)
    if c is None or s is None or a is None:
        return None
    return _guarded_ratio(s - a, c - a)
