"""Cross-condition ratio scores and their guards: zero or non-finite denominators give None, never inf."""

from __future__ import annotations

import math

import pytest
import torch

from saeeval.metrics.stats import ce_loss_score, kl_div_score, recovered, safe_ratio


def test_ce_loss_score_is_share_of_ablation_damage_avoided() -> None:
    # clean 2.0, spliced 2.5, ablated 7.0 → (7 − 2.5)/(7 − 2) = 0.9
    assert ce_loss_score(2.0, 2.5, 7.0) == pytest.approx(0.9)
    assert ce_loss_score(torch.tensor(2.0), torch.tensor(2.0), torch.tensor(7.0)) == pytest.approx(1.0)


def test_kl_div_score_and_recovered_hand_values() -> None:
    assert kl_div_score(0.1, 0.5) == pytest.approx(0.8)
    # logit diff clean 3.5, ablated 0.5, spliced 2.0 → (2 − 0.5)/(3.5 − 0.5) = 0.5
    assert recovered(3.5, 2.0, 0.5) == pytest.approx(0.5)
    assert recovered(-1.0, -3.0, -5.0) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "call",
    [
        lambda: ce_loss_score(2.0, 2.5, 2.0),
        lambda: ce_loss_score(2.0, 2.5, 2.0 + 5e-9),
        lambda: kl_div_score(0.1, 0.0),
        lambda: recovered(1.0, 1.0, 1.0),
        lambda: recovered(float("nan"), 1.0, 0.0),
        lambda: recovered(1.0, float("inf"), 0.0),
        lambda: recovered(1.0, None, 0.0),
        lambda: kl_div_score(torch.tensor(float("nan")), 0.5),
    ],
)
def test_undefined_scores_are_none(call) -> None:
    assert call() is None


def test_safe_ratio_tensor_guard_gives_nan_not_inf() -> None:
    num = torch.tensor([1.0, 1.0, 0.0, 2.0], dtype=torch.float64)
    den = torch.tensor([0.0, 1e-12, 0.0, 4.0], dtype=torch.float64)
    out = safe_ratio(num, den)
    assert torch.isnan(out[:3]).all() and out[3] == 0.5
    assert math.isnan(float(safe_ratio(torch.tensor(1.0), torch.tensor(1e-3), scale=torch.tensor(1e6))))
