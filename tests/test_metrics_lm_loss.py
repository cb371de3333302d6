"""NextTokenCrossEntropy / KLDivergence against sae_lens's own CE/KL evals and a float64 hand reference."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import FixedTokens, make_sae, make_tiny_model
from sae_lens.evals import _kl, get_downstream_reconstruction_metrics
from sae_lens.training.activation_scaler import ActivationScaler

from saeeval.metrics.lm_loss import KLDivergence, NextTokenCrossEntropy
from saeeval.metrics.stats import ce_loss_score, kl_div_score

torch.set_num_threads(1)
HOOK = "blocks.0.hook_resid_post"
BOS = 0


def bos_batches(n_batches: int, batch: int = 3, seq: int = 12, vocab: int = 61) -> list[torch.Tensor]:
    """Token batches with BOS only at position 0, so masked tokens are never a target of an unmasked input."""
    gen = torch.Generator().manual_seed(5)
    out = []
    for _ in range(n_batches):
        tokens = torch.randint(1, vocab, (batch, seq), generator=gen)
        tokens[:, 0] = BOS
        out.append(tokens)
    return out


def reference_ce(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> float:
    """Loop-by-position float64 CE with our convention: input and target both unmasked."""
    logp = logits.double().log_softmax(-1)
    losses = [
        -float(logp[b, t, tokens[b, t + 1]])
        for b in range(tokens.shape[0])
        for t in range(tokens.shape[1] - 1)
        if mask[b, t] and mask[b, t + 1]
    ]
    return sum(losses) / len(losses)


def reference_kl(clean: torch.Tensor, other: torch.Tensor, mask: torch.Tensor) -> float:
    p, q = clean.double().softmax(-1), other.double().softmax(-1)
    per_pos = (p * (p.log() - q.log())).sum(-1)
    return float(per_pos[mask].mean())


@torch.no_grad()
def test_ce_and_kl_match_sae_lens_downstream_metrics() -> None:
    """Two batches through sae_lens ``get_downstream_reconstruction_metrics`` (ActivationScaler() = identity, a
    FixedTokens stand-in for the store) vs our metrics fed logits from direct ``run_with_saes``/``run_with_hooks``."""
    model = make_tiny_model()
    sae = make_sae(HOOK, d_in=32, d_sae=64)
    batches = bos_batches(2)
    want = get_downstream_reconstruction_metrics(
        sae,
        model,
        FixedTokens(batches),
        ActivationScaler(),
        compute_kl=True,
        compute_ce_loss=True,
        n_batches=2,
        eval_batch_size_prompts=3,
        ignore_tokens=[BOS],
    )
    ce = {c: NextTokenCrossEntropy() for c in ("clean", "sae", "abl")}
    kl = {c: KLDivergence() for c in ("sae", "abl")}
    for tokens in batches:
        mask = tokens != BOS
        clean = model(tokens)
        spliced = model.run_with_saes(tokens, saes=[sae], exclude_special_tokens=[BOS])
        ablated = model.run_with_hooks(tokens, fwd_hooks=[(HOOK, lambda act, hook: torch.zeros_like(act))])
        for name, logits in (("clean", clean), ("sae", spliced), ("abl", ablated)):
            ce[name].update(logits, tokens, mask)
        kl["sae"].update(clean, spliced, mask)
        kl["abl"].update(clean, ablated, mask)
    got = {
        "ce_loss_without_sae": float(ce["clean"].compute()),
        "ce_loss_with_sae": float(ce["sae"].compute()),
        "ce_loss_with_ablation": float(ce["abl"].compute()),
        "kl_div_with_sae": float(kl["sae"].compute()),
        "kl_div_with_ablation": float(kl["abl"].compute()),
    }
    got["ce_loss_score"] = ce_loss_score(
        got["ce_loss_without_sae"], got["ce_loss_with_sae"], got["ce_loss_with_ablation"]
    )
    got["kl_div_score"] = kl_div_score(got["kl_div_with_sae"], got["kl_div_with_ablation"])
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-5), key
    assert got["kl_div_with_sae"] > 1e-4  # the SAE really changes the model, so the comparison is not vacuous


def test_kl_per_position_equals_sae_lens_kl() -> None:
    gen = torch.Generator().manual_seed(0)
    clean, other = torch.randn(2, 5, 61, generator=gen) * 3, torch.randn(2, 5, 61, generator=gen) * 3
    for b in range(2):
        for t in range(5):
            metric = KLDivergence()
            only = torch.zeros(2, 5, dtype=torch.bool)
            only[b, t] = True
            metric.update(clean, other, only)
            assert float(metric.compute()) == pytest.approx(float(_kl(clean, other)[b, t]), rel=1e-5)


def masked_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits with a padded tail and a masked token mid-sequence (where the two mask conventions differ)."""
    gen = torch.Generator().manual_seed(1)
    clean = torch.randn(3, 9, 61, generator=gen) * 2
    logits = clean + torch.randn(3, 9, 61, generator=gen)
    tokens = torch.randint(0, 61, (3, 9), generator=gen)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[0, 6:] = False  # right padding
    mask[1, 4] = False  # a special token mid-sequence
    mask[2, 0] = False  # BOS
    return clean, logits, tokens, mask


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 512])
def test_ce_requires_input_and_target_unmasked_and_chunking_changes_nothing(chunk_size: int) -> None:
    _, logits, tokens, mask = masked_case()
    metric = NextTokenCrossEntropy(chunk_size=chunk_size)
    metric.update(logits, tokens, mask)
    assert float(metric.compute()) == pytest.approx(reference_ce(logits, tokens, mask), rel=1e-6)
    assert float(metric.count) == 5 + 6 + 7  # row 0: t=0..4; row 1: t=0..7 except 3, 4; row 2: t=1..7


@pytest.mark.parametrize("chunk_size", [1, 5, 512])
def test_kl_matches_float64_reference_for_any_chunk_size(chunk_size: int) -> None:
    clean, logits, _, mask = masked_case()
    metric = KLDivergence(chunk_size=chunk_size)
    metric.update(clean, logits, mask)
    assert float(metric.compute()) == pytest.approx(reference_kl(clean, logits, mask), rel=1e-5)
    assert float(metric.count) == int(mask.sum())


@pytest.mark.parametrize("chunk_size", [1, 4, 512])
def test_full_mask_views_equal_reference_and_gathered_rows(chunk_size: int) -> None:
    """Every position selected (chunks are views, CE skips the last column by its ignored target) gives the
    float64 reference and the same sums as the gather path on a non-contiguous copy of the same logits."""
    clean, logits, tokens, _ = masked_case()
    full = torch.ones(3, 9, dtype=torch.bool)
    ce, kl = NextTokenCrossEntropy(chunk_size=chunk_size), KLDivergence(chunk_size=chunk_size)
    ce.update(logits, tokens, full)
    kl.update(clean, logits, full)
    assert float(ce.compute()) == pytest.approx(reference_ce(logits, tokens, full), rel=1e-6)
    assert float(kl.compute()) == pytest.approx(reference_kl(clean, logits, full), rel=1e-5)
    assert float(ce.count) == 3 * 8 and float(kl.count) == 3 * 9

    def strided(x: torch.Tensor) -> torch.Tensor:  # same values, batch not outermost: takes the gather path
        return x.transpose(0, 1).contiguous().transpose(0, 1)

    ce2, kl2 = NextTokenCrossEntropy(chunk_size=chunk_size), KLDivergence(chunk_size=chunk_size)
    ce2.update(strided(logits), tokens, full)
    kl2.update(strided(clean), strided(logits), full)
    assert float(ce2.total) == pytest.approx(float(ce.total), rel=1e-12) and float(ce2.count) == float(ce.count)
    assert float(kl2.total) == pytest.approx(float(kl.total), rel=1e-12)


def test_zero_clean_probabilities_contribute_nothing_on_the_full_mask_path() -> None:
    clean, logits, _, _ = masked_case()
    clean[:, :, :10] = float("-inf")  # p_clean = 0 there: 0 · (−inf − log p) must count as 0, not NaN
    full = torch.ones(3, 9, dtype=torch.bool)
    kl = KLDivergence(chunk_size=5)
    kl.update(clean, logits, full)
    p, q = clean.double().softmax(-1), logits.double().softmax(-1)
    want = torch.where(p > 0, p * (p.log() - q.log()), 0.0).sum(-1).mean()
    assert float(kl.compute()) == pytest.approx(float(want), rel=1e-5)


def test_chunked_equals_unchunked_exactly_enough() -> None:
    clean, logits, tokens, mask = masked_case()
    small, large = NextTokenCrossEntropy(chunk_size=2), NextTokenCrossEntropy(chunk_size=10_000)
    small.update(logits, tokens, mask)
    large.update(logits, tokens, mask)
    assert float(small.compute()) == pytest.approx(float(large.compute()), rel=1e-12)
    small, large = KLDivergence(chunk_size=3), KLDivergence(chunk_size=10_000)
    small.update(clean, logits, mask)
    large.update(clean, logits, mask)
    assert float(small.compute()) == pytest.approx(float(large.compute()), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_are_upcast(dtype: torch.dtype) -> None:
    clean, logits, tokens, mask = masked_case()
    clean_h, logits_h = clean.to(dtype), logits.to(dtype)
    ce = NextTokenCrossEntropy()
    ce.update(logits_h, tokens, mask)
    assert float(ce.compute()) == pytest.approx(reference_ce(logits_h.float(), tokens, mask), rel=1e-6)
    kl = KLDivergence()
    kl.update(clean_h, logits_h, mask)
    assert float(kl.compute()) == pytest.approx(reference_kl(clean_h.float(), logits_h.float(), mask), rel=1e-5)


def test_identical_logits_give_zero_kl_and_zero_probabilities_contribute_nothing() -> None:
    clean, _, _, mask = masked_case()
    clean[:, :, :10] = float("-inf")  # p_clean = 0 on part of the vocabulary
    kl = KLDivergence()
    kl.update(clean, clean.clone(), mask)
    assert float(kl.compute()) == pytest.approx(0.0, abs=1e-7)


def test_empty_selection_is_a_noop_and_gives_nan() -> None:
    clean, logits, tokens, _ = masked_case()
    none = torch.zeros(3, 9, dtype=torch.bool)
    ce, kl = NextTokenCrossEntropy(), KLDivergence()
    ce.update(logits, tokens, none)
    kl.update(clean, logits, none)
    ce.update(logits[:, :1], tokens[:, :1], none[:, :1])
    assert math.isnan(float(ce.compute())) and math.isnan(float(kl.compute()))
    assert float(ce.count) == 0 and float(kl.total) == 0


def test_merged_rank_states_equal_one_process() -> None:
    clean, logits, tokens, mask = masked_case()
    single_ce, single_kl = NextTokenCrossEntropy(), KLDivergence()
    single_ce.update(logits, tokens, mask)
    single_kl.update(clean, logits, mask)
    ranks = [(NextTokenCrossEntropy(), KLDivergence()) for _ in range(2)]
    for r, sl in enumerate((slice(0, 1), slice(1, None))):
        ranks[r][0].update(logits[sl], tokens[sl], mask[sl])
        ranks[r][1].update(clean[sl], logits[sl], mask[sl])
    ranks[0][0].merge_state(ranks[1][0]), ranks[0][1].merge_state(ranks[1][1])
    torch.testing.assert_close(ranks[0][0].compute(), single_ce.compute(), rtol=1e-12, atol=0)
    torch.testing.assert_close(ranks[0][1].compute(), single_kl.compute(), rtol=1e-12, atol=0)


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="mask"):
        NextTokenCrossEntropy().update(torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3))
    with pytest.raises(ValueError, match="clean_logits"):
        KLDivergence().update(torch.randn(2, 3, 4), torch.randn(2, 3, 5), torch.ones(2, 3, dtype=torch.bool))


def test_default_chunks_bound_memory_by_vocabulary_and_match_fixed_chunks():
    """The default chunk holds CHUNK_ELEMENTS logits (16 positions at V = 256k), and gives the fixed-size result."""
    from saeeval.metrics.lm_loss import CHUNK_ELEMENTS

    assert NextTokenCrossEntropy()._rows_per_chunk(256_000) == CHUNK_ELEMENTS // 256_000 == 16
    assert KLDivergence()._rows_per_chunk(10 * CHUNK_ELEMENTS) == 1
    gen = torch.Generator().manual_seed(3)
    clean, logits = torch.randn(2, 3, 9, 4000, generator=gen)
    tokens = torch.randint(0, 4000, (3, 9), generator=gen)
    mask = torch.rand(3, 9, generator=gen) > 0.2
    for cls, args in ((NextTokenCrossEntropy, (logits, tokens, mask)), (KLDivergence, (clean, logits, mask))):
        default, fixed = cls(), cls(chunk_size=1)
        default.update(*args)
        fixed.update(*args)
        assert float(default.compute()) == pytest.approx(float(fixed.compute()), rel=1e-12)
