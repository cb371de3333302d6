"""LogitDiff / GroupedLogitDiff / PerExample against numpy and hand-computed statistics, and their exact merging."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from saeeval.metrics.logit_diff import GroupedLogitDiff, LogitDiff, PerExample
from saeeval.metrics.stats import Z_95

torch.set_num_threads(1)


def wilson(k: float, n: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """Textbook Wilson score interval (Wilson 1927), written independently of saeeval.metrics.stats."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def reference(values: np.ndarray) -> dict[str, float]:
    n = len(values)
    mean = values.mean()
    stderr = values.std(ddof=1) / math.sqrt(n)
    acc = float((values > 0).mean())
    lo, hi = wilson(float((values > 0).sum()), n)
    return {
        "logit_diff": mean,
        "logit_diff_stderr": stderr,
        "logit_diff_ci_low": mean - Z_95 * stderr,
        "logit_diff_ci_high": mean + Z_95 * stderr,
        "accuracy": acc,
        "accuracy_stderr": math.sqrt(acc * (1 - acc) / n),
        "accuracy_ci_low": lo,
        "accuracy_ci_high": hi,
        "error_rate": 1 - acc,
        "n": n,
    }


def test_z_is_the_two_sided_95_normal_quantile() -> None:
    quantile = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.975, dtype=torch.float64))
    assert Z_95 == pytest.approx(float(quantile), rel=1e-12)


def test_logit_diff_matches_numpy_mean_ddof1_stderr_and_wilson_ci() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(0.7, 2.0, size=137)
    metric = LogitDiff()
    for chunk in np.array_split(values, 5):
        metric.update(torch.tensor(chunk, dtype=torch.float32))
    got = {k: float(v) for k, v in metric.compute().items()}
    want = reference(values.astype(np.float32).astype(np.float64))
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-14), key


def test_wilson_interval_hand_values() -> None:
    # 3 of 3 correct: Wilson gives [0.4385, 1.0] (the normal approximation would collapse to [1, 1]).
    metric = LogitDiff()
    metric.update(torch.tensor([1.0, 2.0, 0.5]))
    out = metric.compute()
    assert float(out["accuracy_ci_low"]) == pytest.approx(0.43850, abs=1e-5)
    assert float(out["accuracy_ci_high"]) == 1.0
    assert float(out["accuracy_stderr"]) == 0.0


def test_ties_count_as_wrong() -> None:
    metric = LogitDiff()
    metric.update(torch.tensor([0.0, 1.0, -1.0, 0.0]))
    assert float(metric.compute()["accuracy"]) == 0.25


def test_empty_update_is_a_noop_and_undefined_values_are_nan() -> None:
    metric = LogitDiff()
    metric.update(torch.empty(0))
    out = metric.compute()
    assert float(out["n"]) == 0
    assert all(math.isnan(float(out[k])) for k in out if k != "n")
    metric.update(torch.tensor([2.5]))
    metric.update(torch.empty(0))
    out = metric.compute()
    assert float(out["logit_diff"]) == 2.5 and float(out["n"]) == 1
    assert math.isnan(float(out["logit_diff_stderr"])) and math.isnan(float(out["logit_diff_ci_low"]))
    assert not any(math.isinf(float(v)) for v in out.values())


def test_paired_differences_give_the_paired_stderr() -> None:
    rng = np.random.default_rng(1)
    clean = rng.normal(3.0, 1.0, size=50)
    spliced = clean + rng.normal(-0.4, 0.1, size=50)
    metric = LogitDiff()
    metric.update(torch.tensor(spliced - clean, dtype=torch.float64))
    diff = spliced - clean
    assert float(metric.compute()["logit_diff_stderr"]) == pytest.approx(diff.std(ddof=1) / math.sqrt(50), rel=1e-12)


def test_grouped_per_group_and_pooled_values_match_numpy() -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(0.3, 1.5, size=200)
    groups = rng.integers(0, 6, size=200)
    metric = GroupedLogitDiff(num_groups=7)  # group 6 never seen
    for v, g in zip(np.array_split(values, 3), np.array_split(groups, 3), strict=True):
        metric.update(torch.tensor(v), torch.tensor(g))
    out = metric.compute()
    for g in range(6):
        want = reference(values[groups == g])
        for key in ("logit_diff", "logit_diff_stderr", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "n"):
            assert float(out[key][g]) == pytest.approx(want[key], rel=1e-12), (g, key)
    assert float(out["n"][6]) == 0 and math.isnan(float(out["logit_diff"][6]))

    pooled = metric.summarize([1, 4, 6])
    sel = values[np.isin(groups, [1, 4])]
    want = reference(sel)
    assert pooled.keys() == {"logit_diff", "logit_diff_stderr", "accuracy", "error_rate", "n"}
    for key in pooled:
        assert pooled[key] == pytest.approx(want[key], rel=1e-12), key
    assert all(isinstance(v, float) for v in pooled.values())


def test_grouped_error_rate_is_false_positive_rate_on_nontoxic_groups() -> None:
    # group 0 = (identity A, nontoxic), group 1 = (identity A, toxic); logit_diff > 0 means the right label won.
    metric = GroupedLogitDiff(num_groups=2)
    metric.update(torch.tensor([1.0, -1.0, -2.0, 3.0, 2.0, -0.5]), torch.tensor([0, 0, 0, 0, 1, 1]))
    assert metric.summarize([0])["error_rate"] == 0.5  # 2 of 4 nontoxic flagged toxic
    assert metric.summarize([1])["error_rate"] == 0.5
    assert metric.summarize([0, 1])["accuracy"] == pytest.approx(0.5)


def test_grouped_rejects_out_of_range_groups() -> None:
    metric = GroupedLogitDiff(num_groups=3)
    with pytest.raises(ValueError, match="group ids"):
        metric.update(torch.tensor([1.0]), torch.tensor([3]))
    with pytest.raises(ValueError, match="groups must lie"):
        metric.summarize([5])


def test_per_example_returns_values_ordered_by_id() -> None:
    metric = PerExample()
    metric.update(torch.tensor([7, 2]), torch.tensor([0.7, 0.2]))
    metric.update(torch.tensor([], dtype=torch.long), torch.tensor([]))
    metric.update(torch.tensor([5, 0, 9]), torch.tensor([0.5, 0.0, 0.9], dtype=torch.float64))
    ids, values = metric.compute()
    assert ids.tolist() == [0, 2, 5, 7, 9] and ids.dtype == torch.long
    assert values.dtype == torch.float64
    assert values.tolist() == pytest.approx([0.0, 0.2, 0.5, 0.7, 0.9], rel=1e-7)


def test_per_example_empty_rank_sends_typed_placeholders() -> None:
    # A DDP rank with no examples must still all_gather int64 ids and float64 values (matching the other ranks).
    metric = PerExample()
    sent = []

    def fake_gather(tensor: torch.Tensor, group: object = None) -> list[torch.Tensor]:
        sent.append(tensor.dtype)
        return [tensor, torch.tensor([3], dtype=tensor.dtype)]

    metric._sync_dist(fake_gather)
    assert sent == [torch.long, torch.float64]
    assert metric.ids.tolist() == [3]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=1e-15, equal_nan=True, msg=key)


def test_merged_rank_states_equal_one_process() -> None:
    rng = np.random.default_rng(3)
    values = torch.tensor(rng.normal(0.5, 1.0, size=101))
    groups = torch.tensor(rng.integers(0, 4, size=101))
    ids = torch.randperm(101, generator=torch.Generator().manual_seed(0))
    single, single_g, single_p = LogitDiff(), GroupedLogitDiff(4), PerExample()
    single.update(values)
    single_g.update(values, groups)
    single_p.update(ids, values)
    ranks = [(LogitDiff(), GroupedLogitDiff(4), PerExample()) for _ in range(2)]
    for r, sl in enumerate((slice(0, 37), slice(37, None))):  # uneven split, like UnrepeatedDistributedSampler
        ranks[r][0].update(values[sl])
        ranks[r][1].update(values[sl], groups[sl])
        ranks[r][2].update(ids[sl], values[sl])
    for merged, other in zip(ranks[0], ranks[1], strict=True):
        merged.merge_state(other)
    _assert_same(ranks[0][0].compute(), single.compute())
    _assert_same(ranks[0][1].compute(), single_g.compute())
    assert ranks[0][1].summarize([0, 3]) == pytest.approx(single_g.summarize([0, 3]), rel=1e-12)
    for got, want in zip(ranks[0][2].compute(), single_p.compute(), strict=True):
        assert torch.equal(got, want)


def test_group_ids_out_of_range_are_refused_on_the_host() -> None:
    """Checked on host tensors (free); on a GPU the check would sync once per condition and batch."""
    from saeeval.metrics.generation import GenerationMetrics

    for bad in ([0, 3], [-1, 0]):
        with pytest.raises(ValueError, match=r"group ids must lie in \[0, 3\)"):
            GroupedLogitDiff(3).update(torch.tensor([1.0, 2.0]), torch.tensor(bad))
        with pytest.raises(ValueError, match=r"group ids must lie in \[0, 3\)"):
            GenerationMetrics(3, 4).labels.update(torch.tensor([0, 1]), torch.tensor(bad), torch.tensor([1.0, -1.0]))
