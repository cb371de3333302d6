"""compat=saelens / compat=saebench on the zoo: the numbers of sae_lens's own `run_evals` and of a transcription of
SAEBench's core eval (tests/saebench_core.py) on the same token batches, ablated CE/KL included, to 1e-5."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import saebench_core
import torch
from conftest import FixedTokens
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from sae_lens.evals import EvalConfig, run_evals
from sae_lens.training.activation_scaler import ActivationScaler

import saeeval

pytestmark = pytest.mark.slow

RUN = {"limit": 48, "batch_size": 16, "max_length": 11}  # every held-out text is >= 11 tokens: no padding
TOL = {"rel": 1e-5, "abs": 1e-5}
LM = {
    "ce_loss_without_sae": ("clean", "ce_loss"),
    "ce_loss_with_sae": ("sae", "ce_loss"),
    "ce_loss_with_ablation": ("abl", "ce_loss"),
    "kl_div_with_sae": ("sae", "kl_div"),
    "kl_div_with_ablation": ("abl", "kl_div"),
    "ce_loss_score": ("sae", "ce_loss_score"),
    "kl_div_score": ("sae", "kl_div_score"),
}


@pytest.fixture(scope="module")
def zoo():
    with initialize_config_module("saeeval.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "+task=lm",
                *(f"{k}={v}" for k, v in RUN.items() if k != "max_length"),
                f"task.max_length={RUN['max_length']}",
            ],
        )
    # float64 on both sides: the scores are ratios of small differences (ablating L1.attn.z moves CE by ~0.01), and
    # sae_lens averages float32 values, whose rounding the ratio would amplify past 1e-5
    model = instantiate(cfg.model).to(torch.float64)
    saes = {name: sae.to(dtype=torch.float64) for name, sae in instantiate(cfg.saes)(model).items()}
    task = instantiate(cfg.task)
    task.bind(model.tokenizer, model.cfg.default_prepend_bos, model.cfg.n_ctx)
    task.setup("test")
    batches = [b["tokens"] for b in task.test_dataloader()]
    assert all(b.shape[1] == RUN["max_length"] for b in batches) and len(batches) == 3
    assert all(bool((b[:, 0] == model.tokenizer.bos_token_id).all()) for b in batches)
    return model, saes, batches


@contextmanager
def flat_hook_z(sae):
    """Both tools feed hook_z SAEs flattened heads with sae_lens's reshaping off, then restore it."""
    before = getattr(sae, "hook_z_reshaping_mode", False)
    if before:
        sae.turn_off_forward_pass_hook_z_reshaping()
    try:
        yield
    finally:
        if before:
            sae.turn_on_forward_pass_hook_z_reshaping()


def ours(results, name: str) -> dict[str, dict]:
    conds = results.conditions
    sae = conds[name]
    return {
        "clean": conds["clean"]["lm"],
        "sae": sae["lm"],
        "abl": conds[sae["baseline"]]["lm"],
        "recon": sae["reconstruction"][name],
    }


def test_compat_saelens_reproduces_run_evals_including_the_ablated_numbers(zoo) -> None:
    model, saes, batches = zoo
    results = saeeval.evaluate(model, saes, task="lm", compat="saelens", **RUN)
    assert results.document["mask"]["compat"] == "saelens"
    default = saeeval.evaluate(model, saes, task="lm", **RUN)
    config = EvalConfig(
        batch_size_prompts=RUN["batch_size"],
        n_eval_reconstruction_batches=len(batches),
        compute_kl=True,
        compute_ce_loss=True,
        n_eval_sparsity_variance_batches=len(batches),
        compute_l2_norms=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
    )
    recon_keys = {
        "explained_variance": "explained_variance",
        "explained_variance_legacy": "explained_variance_legacy_saelens",
        "mse": "mse",
        "cossim": "cosine_similarity",
        "l2_norm_in": "l2_norm_in",
        "l2_norm_out": "l2_norm_out",
        "l2_ratio": "l2_ratio",
        "relative_reconstruction_bias": "relative_reconstruction_bias_saelens",
        "l0": "l0",
        "l1": "l1",
    }
    ablation_differs = 0
    for name, sae in saes.items():
        with flat_hook_z(sae):
            metrics, _ = run_evals(sae, FixedTokens(batches), model, ActivationScaler(), config)
        want = {k: v for group in metrics.values() for k, v in group.items()}
        got = ours(results, name)
        for key, (part, ours_key) in LM.items():
            assert got[part][ours_key] == pytest.approx(want[key], **TOL), (name, key)
        for key, ours_key in recon_keys.items():
            assert got["recon"][ours_key] == pytest.approx(want[key], **TOL), (name, key)
        # without compat, saeeval keeps BOS out of the ablation: its ablated KL differs where BOS matters
        plain = ours(default, name)["abl"]["kl_div"]
        ablation_differs += plain != pytest.approx(want["kl_div_with_ablation"], rel=1e-3)
    assert ablation_differs > 0


@pytest.mark.parametrize("exclude_special_from_reconstruction", [False, True])
def test_compat_saebench_matches_a_transcription_of_its_core_eval(zoo, exclude_special_from_reconstruction) -> None:
    """SAEBench's default splices at BOS but leaves it out of every metric (mask.splice.exclude_special=false);
    with --exclude_special_tokens_from_reconstruction it splices like saeeval's default."""
    model, saes, batches = zoo
    splice = {"exclude_special": exclude_special_from_reconstruction}
    results = saeeval.evaluate(model, saes, task="lm", compat="saebench", mask={"splice": splice}, **RUN)
    tok = model.tokenizer
    ignore = {tok.pad_token_id, tok.eos_token_id, tok.bos_token_id}
    recon_keys = {
        "explained_variance": "explained_variance_saebench",
        "mse": "mse_saebench",
        "explained_variance_legacy": "explained_variance_legacy_saebench",
        "l1": "l1_saebench",
        "relative_reconstruction_bias": "relative_reconstruction_bias_saebench",
        "cossim": "cosine_similarity",
        "l0": "l0",
        "l2_ratio": "l2_ratio",
        "l2_norm_in": "l2_norm_in",
    }
    for name, sae in saes.items():
        with flat_hook_z(sae):
            down = saebench_core.get_downstream_reconstruction_metrics(
                sae, model, batches, ignore, exclude_special_from_reconstruction
            )
            recon = saebench_core.get_sparsity_and_variance_metrics(sae, model, batches, ignore)
        got = ours(results, name)
        for key, (part, ours_key) in LM.items():
            assert got[part][ours_key] == pytest.approx(down[key], **TOL), (name, key)
        for key, ours_key in recon_keys.items():
            assert got["recon"][ours_key] == pytest.approx(recon[key], **TOL), (name, key)
        assert got["recon"]["n_tokens"] == sum(int((b != tok.bos_token_id).sum()) for b in batches)
        # SAEBench's MSE divides each token's error by the batch's token count: a different number from saeeval's
        assert got["recon"]["mse_saebench"] != pytest.approx(got["recon"]["mse"], rel=1e-2)
