"""Feature attribution's numbers against hand-computed values and sae_lens's own error-term splice.

A one-layer model without LayerNorm, with the SAE on its last residual stream, makes the logit difference linear in
the latents: its gradient is `W_dec[j] · (W_U[:, correct] − W_U[:, incorrect])` at the answer position and 0
elsewhere, so attribution patching and the exact ablation effect can be written down by hand. On the zoo the
gradient is checked against sae_lens's `HookedSAETransformer` (use_error_term=True, gradient read at
`hook_sae_acts_post`), and integrated gradients against completeness and single-latent ablation.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_sae
from sae_lens import HookedSAETransformer
from transformer_lens import HookedTransformerConfig

from saeeval.engine.splicing import Splicer
from saeeval.features.attribution import LatentProbe, ablation_effects, attribution
from saeeval.loading.models import load_model
from saeeval.loading.saes import load_saes
from saeeval.tasks.ioi import IOIDataModule

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def linear_case():
    cfg = HookedTransformerConfig(
        n_layers=1,
        d_model=8,
        n_heads=2,
        d_head=4,
        d_mlp=16,
        d_vocab=11,
        n_ctx=16,
        act_fn="relu",
        normalization_type=None,
        seed=0,
    )
    model = HookedSAETransformer(cfg).eval()
    sae = make_sae("blocks.0.hook_resid_post", 8, d_sae=6, seed=1)
    tokens = torch.tensor([[3, 4, 5, 6, 7], [0, 0, 2, 9, 1], [0, 5, 5, 8, 2]])
    am = (torch.arange(5)[None] >= torch.tensor([[0], [2], [1]])).long()
    mask = am.bool().clone()
    mask[0, 1] = False
    mask[2, 4] = False  # row 2: its answer position is not attributed
    batch = {
        "tokens": tokens,
        "attention_mask": am,
        "positions": {"END": torch.tensor([4, 4, 4])},
        "correct": torch.tensor([1, 2, 3]),
        "incorrect": torch.tensor([4, 5, 6]),
    }
    splicer = Splicer(model, {"r": sae})
    clean = splicer.clean(tokens, am, ["blocks.0.hook_resid_post"])
    return model, sae, splicer, clean, mask, batch


def hand_attribution(model, sae, clean, mask, batch, patch):
    """(p_j − f_j) · W_dec[j]·u at the answer column, per row (0 where that column is not attributed)."""
    u = model.W_U[:, batch["correct"]] - model.W_U[:, batch["incorrect"]]  # [d, B]
    out = torch.zeros(3, sae.cfg.d_sae)
    for b in range(3):
        if mask[b, 4]:
            f = sae.encode(clean.acts["blocks.0.hook_resid_post"][b, 4][None])[0]
            out[b] = (patch - f) * (sae.W_dec @ u[:, b])
    return out


@pytest.mark.parametrize("baseline", ["zero", "mean"])
def test_attribution_patching_is_the_analytic_gradient_times_the_move(linear_case, baseline):
    model, sae, splicer, clean, mask, batch = linear_case
    probe = LatentProbe(splicer, "r", "END")
    patch = torch.zeros(6) if baseline == "zero" else torch.linspace(0.1, 0.6, 6)
    with torch.no_grad():
        expected = hand_attribution(model, sae, clean, mask, batch, patch)
    got, f, row = attribution(probe, clean, mask, batch, patch)
    assert f.shape == (int(mask.sum()), 6) and row.tolist() == mask.nonzero()[:, 0].tolist()
    assert expected.abs().max() > 0.05 and (expected[2] == 0).all()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # LD is linear in the latents here, so each exact single-latent ablation equals its attribution
    effects = ablation_effects(probe, clean, mask, batch, patch, [[j] for j in range(6)], 4)
    torch.testing.assert_close(effects, expected, atol=1e-5, rtol=1e-5)


def test_an_unedited_splice_reproduces_the_clean_model_exactly(linear_case):
    _, _, splicer, clean, mask, batch = linear_case
    probe = LatentProbe(splicer, "r", "END")
    assert ablation_effects(probe, clean, mask, batch, torch.zeros(6), [[]]).abs().max() == 0


@pytest.fixture(scope="module")
def zoo():
    model = load_model("tiny", device="cpu", dtype="float32")
    saes = load_saes(model, source="zoo", name="tiny")
    task = IOIDataModule(n_examples=8, batch_size=8)
    task.bind(model.tokenizer, model.cfg.default_prepend_bos, model.cfg.n_ctx)
    task.setup()
    batch = next(iter(task.test_dataloader()))
    mask = torch.zeros_like(batch["attention_mask"], dtype=torch.bool)
    rows = torch.arange(8)
    mask[rows, batch["positions"]["S2"]] = True
    mask[rows, batch["positions"]["END"]] = True
    return model, saes, Splicer(model, saes), batch, mask


def _example(batch, b):
    """Example b's own tokens (its padding cut off) and the columns of its named positions."""
    shift = int((batch["attention_mask"][b] == 0).sum())
    return batch["tokens"][b, shift:][None], {k: int(v[b]) - shift for k, v in batch["positions"].items()}


def sae_lens_atp(model, sae, batch, mask):
    """Attribution patching (zero baseline) read off sae_lens: −f·∂LD/∂f at `hook_sae_acts_post`, one example
    at a time (no padding), SAE attached with use_error_term=True."""
    out = []
    for b in range(batch["tokens"].shape[0]):
        tokens, pos = _example(batch, b)
        keep = mask[b, -tokens.shape[1] :]
        seen = {}

        def grab(acts, hook, seen=seen):
            seen["f"] = acts.detach().requires_grad_(True)  # the latents as a leaf, same values
            return seen["f"]

        with model.saes(saes=[sae], use_error_term=True):
            hook = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
            logits = model.run_with_hooks(tokens, fwd_hooks=[(hook, grab)])
        end = logits[0, pos["END"]]
        (end[batch["correct"][b]] - end[batch["incorrect"][b]]).backward()
        f, grad = seen["f"][0].detach(), seen["f"].grad[0]
        out.append((-f * grad)[keep].sum(0))
    return torch.stack(out)


@pytest.mark.parametrize("name", ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z", "blocks.1.hook_mlp_out"])
def test_attribution_patching_equals_the_gradient_sae_lens_gives(zoo, name):
    model, saes, splicer, batch, mask = zoo
    probe = LatentProbe(splicer, name, "END")
    clean = splicer.clean(batch["tokens"], batch["attention_mask"], [probe.hook])
    got, _, _ = attribution(probe, clean, mask, batch, torch.zeros(probe.d_sae))
    with torch.enable_grad():
        ref = sae_lens_atp(model, saes[name], batch, mask)
    assert ref.abs().max() > 1e-2
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_integrated_gradients_are_complete_and_exact_for_one_moving_latent(zoo):
    _, _, splicer, batch, mask = zoo
    probe = LatentProbe(splicer, "blocks.0.hook_resid_post", "END")
    clean = splicer.clean(batch["tokens"], batch["attention_mask"], [probe.hook])
    zero = torch.zeros(probe.d_sae)
    ig, f, _ = attribution(probe, clean, mask, batch, zero, method="ig", steps=128, points_per_forward=32)
    everything = ablation_effects(probe, clean, mask, batch, zero, [list(range(probe.d_sae))])[:, 0]
    assert everything.abs().min() > 0.5  # moving every latent to 0 changes each example's LD a lot
    torch.testing.assert_close(ig.sum(1), everything, atol=5e-3 * everything.abs().max().item(), rtol=0)
    atp, _, _ = attribution(probe, clean, mask, batch, zero)
    assert (atp.sum(1) - everything).abs().max() > 10 * (ig.sum(1) - everything).abs().max()  # AtP is not complete

    top = ig.abs().mean(0).argsort(descending=True)[:3].tolist()
    for j in top:
        patch = f.clone()
        patch[:, j] = 0  # only latent j moves
        one, _, _ = attribution(probe, clean, mask, batch, patch, method="ig", steps=64, points_per_forward=32)
        exact = ablation_effects(probe, clean, mask, batch, zero, [[j]])[:, 0]
        assert (one[:, [k for k in range(probe.d_sae) if k != j]] == 0).all()
        torch.testing.assert_close(one[:, j], exact, atol=2e-3 * max(exact.abs().max().item(), 0.1), rtol=0)


@pytest.fixture
def bf16_probe(zoo):
    """The zoo model and its resid_post SAE in bf16 (put back to float32 afterwards), a probe and a clean pass."""
    model, saes, _, batch, mask = zoo
    name = "blocks.0.hook_resid_post"
    half = Splicer(model.to(torch.bfloat16), {name: saes[name].to(dtype=torch.bfloat16)})
    try:
        probe = LatentProbe(half, name, "END")
        yield probe, half.clean(batch["tokens"], batch["attention_mask"], [probe.hook]), batch, mask
    finally:
        model.to(torch.float32)
        saes[name].to(dtype=torch.float32)


def test_a_null_edit_has_exactly_zero_effect_in_bfloat16(bf16_probe):
    """Effects are measured against an unedited copy in the same forward: latents that are already at the patch
    value change nothing, exactly, even in bf16 and beside edits that do change the answer."""
    probe, clean, batch, mask = bf16_probe
    f, _ = probe.prepare(clean, mask)
    silent = (f == 0).all(0).nonzero()[:, 0].tolist()
    live = f.abs().sum(0).argsort(descending=True)[:3].tolist()
    assert len(silent) >= 2
    edits = [[silent[0]], live[:1], silent[:2], live, [silent[1]]]
    effects = ablation_effects(probe, clean, mask, batch, torch.zeros(probe.d_sae), edits, latents_per_forward=5)
    assert (effects[:, [0, 2, 4]] == 0).all()
    assert effects[:, 3].abs().min() > 0


def test_integrated_gradients_midpoints_stay_distinct_in_bfloat16(bf16_probe, monkeypatch):
    """256 IG steps on a bf16 SAE evaluate 256 distinct float32 midpoints (bf16 has 8 bits: (k + ½)/256 would
    repeat) and sum their gradients in float32."""
    probe, clean, batch, mask = bf16_probe
    seen = []
    gradients = probe.gradients

    def record(clean, mask, batch, f, points):
        seen.append(points.detach())
        return gradients(clean, mask, batch, f, points)

    monkeypatch.setattr(probe, "gradients", record)
    f, _ = probe.prepare(clean, mask)
    n, j = (f != 0).nonzero()[0].tolist()
    ig, _, _ = attribution(probe, clean, mask, batch, torch.zeros(probe.d_sae), "ig", 256, 64)
    points = torch.cat(seen)
    assert points.dtype == torch.float32 and ig.dtype == torch.float32
    assert points[:, n, j].unique().numel() == 256
