"""Reconstruction against sae_lens's own ``get_sparsity_and_variance_metrics`` on the same tokens, plus edge cases."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import FixedTokens, make_sae, make_tiny_model
from sae_lens.evals import ExplainedVarianceCalculator, get_sparsity_and_variance_metrics
from sae_lens.training.activation_scaler import ActivationScaler

import saeeval.metrics.reconstruction as reconstruction
from saeeval.metrics.reconstruction import Reconstruction

torch.set_num_threads(1)
HOOK = "blocks.0.hook_resid_post"
BOS = 0
D_IN, D_SAE = 32, 64
N_DEAD = 5
# our key → sae_lens key
SAE_LENS_KEYS = {
    "mse": "mse",
    "explained_variance": "explained_variance",
    "cosine_similarity": "cossim",
    "l2_norm_in": "l2_norm_in",
    "l2_norm_out": "l2_norm_out",
    "l2_ratio": "l2_ratio",
    "l0": "l0",
    "l1": "l1",
    "relative_reconstruction_bias": "relative_reconstruction_bias",
}


def token_batches(n_batches: int, batch: int = 4, seq: int = 10) -> list[torch.Tensor]:
    """Random tokens with BOS at position 0 and once mid-sequence (so masking really drops interior tokens)."""
    gen = torch.Generator().manual_seed(11)
    out = []
    for _ in range(n_batches):
        tokens = torch.randint(1, 61, (batch, seq), generator=gen)
        tokens[:, 0] = BOS
        tokens[1, 5] = BOS
        out.append(tokens)
    return out


def sae_with_dead_features(arch: str):
    """A conftest SAE, or ("near_identity") a standard SAE with W_enc = [I, −I], W_dec = [I; −I] plus noise, whose
    reconstruction is decent (EV ≈ 0.7, cos ≈ 0.9) like a trained SAE's; N_DEAD features are made dead in both."""
    sae = make_sae(HOOK, d_in=D_IN, d_sae=D_SAE, arch="standard" if arch == "near_identity" else arch)
    with torch.no_grad():
        if arch == "near_identity":
            gen = torch.Generator().manual_seed(3)
            eye = torch.eye(D_IN)
            sae.W_enc.copy_(torch.cat([eye, -eye], 1) + 0.05 * torch.randn(D_IN, D_SAE, generator=gen))
            sae.W_dec.copy_(torch.cat([eye, -eye], 0) + 0.05 * torch.randn(D_SAE, D_IN, generator=gen))
            sae.b_enc.zero_()
            sae.b_dec.zero_()
        sae.b_enc[:N_DEAD] = -1e4  # these can never fire, so dead_fraction has something to count
    return sae


@torch.no_grad()
def ours(model, sae, batches: list[torch.Tensor]) -> dict[str, float]:
    """What the caller does: run to the hook, encode/decode, keep the unmasked tokens, feed the metric."""
    metric = Reconstruction(D_IN, D_SAE)
    for tokens in batches:
        _, cache = model.run_with_cache(tokens, names_filter=[HOOK])
        x = cache[HOOK]
        feats = sae.encode(x)
        x_hat = sae.decode(feats)
        keep = tokens != BOS
        metric.update(x[keep], x_hat[keep], feats[keep])
    return {k: float(v) for k, v in metric.compute().items()}


def sae_lens_metrics(model, sae, batches: list[torch.Tensor]) -> tuple[dict, dict]:
    """sae_lens 6.54.12 with a real identity ``ActivationScaler()`` and a FixedTokens stand-in for the store."""
    return get_sparsity_and_variance_metrics(
        sae,
        model,
        FixedTokens(batches),
        ActivationScaler(),
        n_batches=len(batches),
        compute_l2_norms=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
        compute_featurewise_density_statistics=True,
        eval_batch_size_prompts=batches[0].shape[0],
        model_kwargs={},
        ignore_tokens=[BOS],
    )


@pytest.mark.parametrize("arch", ["near_identity", "standard", "topk", "jumprelu"])
def test_single_batch_matches_sae_lens_sparsity_and_variance_metrics(arch: str) -> None:
    model, sae = make_tiny_model(), sae_with_dead_features(arch)
    batches = token_batches(1)
    got = ours(model, sae, batches)
    want, feature_metrics = sae_lens_metrics(model, sae, batches)
    for key, theirs in SAE_LENS_KEYS.items():
        assert got[key] == pytest.approx(want[theirs], rel=1e-5), key
    density = torch.tensor(feature_metrics["feature_density"])
    assert got["dead_fraction"] == pytest.approx(float((density == 0).float().mean()))
    assert got["dead_fraction"] >= N_DEAD / D_SAE
    assert got["n_tokens"] == 4 * 9 - 1
    assert 0 < got["l0"] < D_SAE - N_DEAD
    if arch == "near_identity":
        assert 0.5 < got["explained_variance"] < 1 and 0.5 < got["cosine_similarity"] < 1


def test_two_batches_match_sae_lens_except_rrb_which_is_global() -> None:
    """Token-weighted means and the streaming EV agree across batches; sae_lens averages per-batch RRB ratios,
    the results contract (docs/results.md) takes E‖x̂‖²/E⟨x,x̂⟩ over all tokens."""
    model, sae = make_tiny_model(), sae_with_dead_features("standard")
    batches = token_batches(2)
    got = ours(model, sae, batches)
    want, _ = sae_lens_metrics(model, sae, batches)
    for key, theirs in SAE_LENS_KEYS.items():
        if key != "relative_reconstruction_bias":
            assert got[key] == pytest.approx(want[theirs], rel=1e-5), key
    with torch.no_grad():
        xs, xhs = [], []
        for tokens in batches:
            x = model.run_with_cache(tokens, names_filter=[HOOK])[1][HOOK][tokens != BOS].double()
            xs.append(x)
            xhs.append(sae.decode(sae.encode(x.float())).double())
        x, x_hat = torch.cat(xs), torch.cat(xhs)
    rrb = float(x_hat.pow(2).sum(-1).mean() / (x * x_hat).sum(-1).mean())
    assert got["relative_reconstruction_bias"] == pytest.approx(rrb, rel=1e-5)


def test_explained_variance_degenerate_cases_follow_sae_lens() -> None:
    x = torch.ones(6, 4)
    for x_hat in (x.clone(), x + 0.5):
        metric = Reconstruction(4, 3)
        metric.update(x, x_hat, torch.zeros(6, 3))
        calc = ExplainedVarianceCalculator()
        calc.add_batch(sae_output=x_hat, hidden_acts=x)
        out = metric.compute()
        assert float(out["explained_variance"]) == calc.compute()  # 1.0 when x̂ = x, else 0.0
        assert float(out["dead_fraction"]) == 1.0


def test_half_inputs_accumulate_in_float64() -> None:
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(50, 8, generator=gen) + 3).bfloat16()
    x_hat = (x.float() + 0.1 * torch.randn(50, 8, generator=gen)).bfloat16()
    feats = torch.relu(torch.randn(50, 16, generator=gen)).half()
    metric = Reconstruction(8, 16)
    metric.update(x, x_hat, feats)
    out = metric.compute()
    xd, hd = x.double(), x_hat.double()
    mse = (xd - hd).pow(2).sum(-1).mean()
    var = xd.pow(2).sum(-1).mean() - xd.mean(0).pow(2).sum()
    assert float(out["mse"]) == pytest.approx(float(mse), rel=1e-12)
    assert float(out["explained_variance"]) == pytest.approx(float(1 - mse / var), rel=1e-12)
    assert float(out["l1"]) == pytest.approx(float(feats.double().abs().sum(-1).mean()), rel=1e-12)


def test_row_chunking_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(1)
    x, x_hat = torch.randn(37, 8, generator=gen), torch.randn(37, 8, generator=gen)
    feats = torch.relu(torch.randn(37, 16, generator=gen))
    whole = Reconstruction(8, 16)
    whole.update(x, x_hat, feats)
    monkeypatch.setattr(reconstruction, "CHUNK_ELEMENTS", 20)  # 2 rows of x, 1 row of feats per chunk
    chunked = Reconstruction(8, 16)
    chunked.update(x, x_hat, feats)
    for key, value in whole.compute().items():
        torch.testing.assert_close(chunked.compute()[key], value, rtol=1e-12, atol=1e-15, msg=key)


def test_a_gpu_updates_in_8x_larger_chunks() -> None:
    """256 rows per chunk at d_sae 131k instead of the CPU's 32: 8× fewer kernel launches per SAE and batch."""
    assert reconstruction.chunk_rows(131_072, torch.device("cpu")) == 32
    assert reconstruction.chunk_rows(131_072, torch.device("cuda")) == 256


def test_empty_update_is_noop_and_zero_reconstruction_gives_nan_not_inf() -> None:
    metric = Reconstruction(4, 3)
    metric.update(torch.empty(0, 4), torch.empty(0, 4), torch.empty(0, 3))
    out = metric.compute()
    assert float(out["n_tokens"]) == 0 and all(math.isnan(float(v)) for k, v in out.items() if k != "n_tokens")
    x = torch.randn(5, 4)
    metric.update(x, torch.zeros(5, 4), torch.zeros(5, 3))  # a fully dead SAE with zero bias
    out = metric.compute()
    assert math.isnan(float(out["relative_reconstruction_bias"]))
    assert float(out["cosine_similarity"]) == 0.0 and float(out["l2_ratio"]) == 0.0
    assert not any(math.isinf(float(v)) for v in out.values())


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="x and x_hat"):
        Reconstruction(4, 3).update(torch.randn(2, 5), torch.randn(2, 5), torch.randn(2, 3))
    with pytest.raises(ValueError, match="feats"):
        Reconstruction(4, 3).update(torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4))


def test_merged_rank_states_equal_one_process() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(41, 8, generator=gen) + 2
    x_hat = x + 0.3 * torch.randn(41, 8, generator=gen)
    feats = torch.relu(torch.randn(41, 16, generator=gen) - 1)
    single = Reconstruction(8, 16)
    single.update(x, x_hat, feats)
    rank0, rank1 = Reconstruction(8, 16), Reconstruction(8, 16)
    rank0.update(x[:13], x_hat[:13], feats[:13])
    rank1.update(x[13:], x_hat[13:], feats[13:])
    rank0.merge_state(rank1)
    merged, want = rank0.compute(), single.compute()
    for key in want:
        torch.testing.assert_close(merged[key], want[key], rtol=1e-12, atol=1e-15, msg=key)
