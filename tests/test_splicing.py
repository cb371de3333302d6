"""The splicing engine against independent full forwards (run_with_hooks, run_with_saes) on a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_sae, make_tiny_model
from omegaconf import OmegaConf
from sae_lens import HookedSAETransformer
from transformer_lens import HookedTransformerConfig

from saeeval.engine.conditions import Condition, build_conditions, hooks_of
from saeeval.engine.mean_ablation import ActivationMeans
from saeeval.engine.splicing import Splicer
from saeeval.errors import SaeevalError

torch.set_num_threads(1)
D = 32
ATOL = 1e-5


@pytest.fixture(scope="module")
def model():
    return make_tiny_model(n_layers=2, d_model=D, n_heads=4)


@pytest.fixture(scope="module")
def saes():
    return {
        "r0": make_sae("blocks.0.hook_resid_post", D, seed=1),
        "r0_topk": make_sae("blocks.0.hook_resid_post", D, arch="topk", seed=2),
        "r1": make_sae("blocks.1.hook_resid_post", D, arch="topk", seed=3),
        "m0": make_sae("blocks.0.hook_mlp_out", D, arch="topk", seed=4),
        "z1": make_sae("blocks.1.attn.hook_z", D, seed=5),
        "z0_topk": make_sae("blocks.0.attn.hook_z", D, arch="topk", seed=6),
    }


@pytest.fixture(scope="module")
def batch():
    """Left-padded rows of lengths 9, 6 and 4 (pad id 0) and a mask that also drops some real tokens."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 61, (3, 9), generator=gen)
    am = torch.ones(3, 9, dtype=torch.long)
    am[1, :3] = 0
    am[2, :5] = 0
    tokens[am == 0] = 0
    mask = am.bool().clone()
    mask[0, [0, 4]] = False
    mask[1, 3] = False
    mask[2, 7] = False
    return tokens, am, mask


def naive_logits(model, tokens, am, mask, interventions):
    """Full forward with hand-written hooks: new activation where mask, clean activation elsewhere."""

    def make(fn):
        def hook(x, hook):
            m = mask.reshape(*mask.shape, *([1] * (x.ndim - 2)))
            return torch.where(m, fn(x), x)

        return hook

    with torch.no_grad():
        return model.run_with_hooks(tokens, attention_mask=am, fwd_hooks=[(h, make(f)) for h, f in interventions])


def sae_fn(sae, error_term=False):
    def fn(x):
        x_hat = sae.decode(sae.encode(x))  # hook_z SAEs reshape [B,T,H,dh] themselves (sae_lens default)
        return x_hat + (x - x_hat) if error_term else x_hat

    return fn


def hook(saes, name):
    return saes[name].cfg.metadata.hook_name


def sae_cond(saes, *names, error_term=False):
    hooks = tuple(dict.fromkeys(hook(saes, n) for n in names))
    return Condition("+".join(names), tuple(names), hooks, use_error_term=error_term)


@pytest.mark.parametrize(
    "names",
    [
        ("r0",),
        ("r0_topk",),
        ("r1",),
        ("m0",),
        ("z1",),
        ("z0_topk",),
        ("r0", "r1"),
        ("z0_topk", "m0", "z1"),
        ("r0", "z1"),
        ("r0", "m0"),
    ],
)
def test_sae_condition_logits_match_naive_full_forward(model, saes, batch, names):
    tokens, am, mask = batch
    sp = Splicer(model, saes)
    cond = sae_cond(saes, *names)
    clean = sp.clean(tokens, am, cond.hooks)
    got = sp.run(cond, clean, mask).logits
    want = naive_logits(model, tokens, am, mask, [(hook(saes, n), sae_fn(saes[n])) for n in names])
    assert (got - want).abs().max().item() < ATOL
    assert (got - clean.logits).abs().max().item() > 1e-3  # the splice really changed something


def test_error_term_condition_matches_naive_and_clean(model, saes, batch):
    tokens, am, mask = batch
    sp = Splicer(model, saes)
    cond = sae_cond(saes, "r0", "z1", error_term=True)
    clean = sp.clean(tokens, am, cond.hooks)
    res = sp.run(cond, clean, mask)
    want = naive_logits(model, tokens, am, mask, [(hook(saes, n), sae_fn(saes[n], True)) for n in ("r0", "z1")])
    assert (res.logits - want).abs().max().item() < ATOL
    assert (res.logits - clean.logits).abs().max().item() < ATOL
    assert set(res.recon) == {"r0", "z1"}


@pytest.mark.parametrize("names", [("r0",), ("r1",), ("z1",), ("m0", "r1"), ("r0", "z1")])
def test_ablation_conditions_match_naive_full_forward(model, saes, batch, names):
    tokens, am, mask = batch
    sp = Splicer(model, saes)
    hooks = tuple(hook(saes, n) for n in names)
    clean = sp.clean(tokens, am, hooks)
    means = {h: clean.acts[h][mask].mean(0) for h in hooks}
    zero = sp.run(Condition("z", (), hooks, ablation="zero"), clean, mask).logits
    mean = sp.run(Condition("m", (), hooks, ablation="mean"), clean, mask, means=means).logits
    want_zero = naive_logits(model, tokens, am, mask, [(h, torch.zeros_like) for h in hooks])
    want_mean = naive_logits(model, tokens, am, mask, [(h, lambda x, h=h: means[h].expand_as(x)) for h in hooks])
    assert (zero - want_zero).abs().max().item() < ATOL
    assert (mean - want_mean).abs().max().item() < ATOL
    assert (zero - mean).abs().max().item() > 1e-3


@pytest.mark.parametrize("names", [("r0",), ("z1",), ("m0", "r1", "z0_topk")])
def test_unmasked_splice_matches_run_with_saes_on_real_tokens(model, saes, batch, names):
    tokens, am, _ = batch
    real = am.bool()
    sp = Splicer(model, saes)
    cond = sae_cond(saes, *names)
    clean = sp.clean(tokens, am, cond.hooks)
    got = sp.run(cond, clean, real).logits
    with torch.no_grad():
        want = model.run_with_saes(tokens, saes=[saes[n] for n in names], attention_mask=am)
    assert (got[real] - want[real]).abs().max().item() < ATOL
    assert model.acts_to_saes == {}


def test_clean_pass_equals_plain_forward_and_bare_suffix_equals_clean(model, saes, batch):
    tokens, am, _ = batch
    sp = Splicer(model, saes)
    conds = build_conditions(saes)
    clean = sp.clean(tokens, am, hooks_of(conds))
    with torch.no_grad():
        assert torch.equal(clean.logits, model(tokens, attention_mask=am))
    nothing = torch.zeros_like(am, dtype=torch.bool)
    for cond in conds:
        assert (sp.run(cond, clean, nothing).logits - clean.logits).abs().max().item() < ATOL
    assert set(clean.resid_pre) == {0, 1, 2}
    assert clean.resid_pre[1] is clean.acts["blocks.0.hook_resid_post"]  # block 0's output, not a second copy
    assert clean.resid_pre[2] is clean.acts["blocks.1.hook_resid_post"]  # the input of ln_final + unembed


def test_resid_post_splices_start_after_their_block_unless_the_group_touches_it(model, saes):
    sp = Splicer(model, saes)
    starts = {
        names: sp.start_layer(sae_cond(saes, *names))
        for names in [("r0",), ("r1",), ("m0",), ("z1",), ("r0", "z1"), ("r0", "m0"), ("z0_topk", "r1")]
    }
    assert starts == {
        ("r0",): 1,
        ("r1",): 2,
        ("m0",): 0,
        ("z1",): 1,
        ("r0", "z1"): 1,
        ("r0", "m0"): 0,
        ("z0_topk", "r1"): 0,
    }


def test_shortformer_model_splices_match_naive_full_forward(batch):
    tokens, am, mask = batch
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=D,
        n_heads=4,
        d_head=D // 4,
        d_mlp=4 * D,
        d_vocab=61,
        n_ctx=64,
        act_fn="gelu",
        normalization_type="LN",
        seed=3,
        positional_embedding_type="shortformer",
    )
    sf = HookedSAETransformer(cfg).eval()
    saes = {
        "r0": make_sae("blocks.0.hook_resid_post", D, seed=1),
        "r1": make_sae("blocks.1.hook_resid_post", D),
        "z1": make_sae("blocks.1.attn.hook_z", D, seed=5),
    }
    sp = Splicer(sf, saes)
    for names in [("r0",), ("r1",), ("z1",), ("r0", "z1")]:
        cond = sae_cond(saes, *names)
        clean = sp.clean(tokens, am, cond.hooks)
        got = sp.run(cond, clean, mask).logits
        want = naive_logits(sf, tokens, am, mask, [(hook(saes, n), sae_fn(saes[n])) for n in names])
        assert (got - want).abs().max().item() < ATOL


def _capture_after_splice(model, start_layer, hook_name, store):
    """Arm a capture at `hook_name` once the suffix has started, so it runs after the engine's splice hook.

    A resid_post splice of block start_layer-1 is the suffix's input: captured where the suffix reads it.
    """
    handles = []
    if hook_name == f"blocks.{start_layer - 1}.hook_resid_post":
        reader = model.blocks[start_layer] if start_layer < model.cfg.n_layers else model.ln_final
        handles.append(reader.register_forward_pre_hook(lambda m, args: store.append(args[0].clone())))
        return [], handles

    def arm(x, hook):
        handles.append(model.hook_dict[hook_name].register_forward_hook(lambda m, i, out: store.append(out.clone())))

    return [(f"blocks.{start_layer}.hook_resid_pre", arm)], handles


@pytest.mark.parametrize("name", ["r0", "r1", "m0", "z1", "zero", "zero_r1"])
def test_masked_out_positions_keep_the_clean_activation_bit_for_bit(model, saes, batch, name):
    tokens, am, mask = batch
    sp = Splicer(model, saes)
    if name.startswith("zero"):
        cond = Condition(name, (), (hook(saes, "r1" if name == "zero_r1" else "z1"),), ablation="zero")
    else:
        cond = sae_cond(saes, name)
    h = cond.hooks[0]
    clean = sp.clean(tokens, am, cond.hooks)
    store: list[torch.Tensor] = []
    fwd_hooks, handles = _capture_after_splice(model, sp.start_layer(cond), h, store)
    with model.hooks(fwd_hooks=fwd_hooks):
        sp.run(cond, clean, mask)
    for handle in handles:
        handle.remove()
    spliced = store[0]
    assert torch.equal(spliced[~mask], clean.acts[h][~mask])
    assert not torch.equal(spliced[mask], clean.acts[h][mask])


def test_runs_leave_model_and_saes_untouched(model, saes, batch):
    tokens, am, mask = batch
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hook_names = list(model.hook_dict)
    modes = {n: s.hook_z_reshaping_mode for n, s in saes.items()}
    sp = Splicer(model, saes)
    conds = build_conditions(saes, groups=[["r0", "z1", "r1"]], ablation="mean")
    clean = sp.clean(tokens, am, hooks_of(conds))
    means = ActivationMeans(hooks_of(conds))
    means.update(clean, mask)
    sp.run_many(conds, clean, mask, means=means.compute(), chunk_size=3)
    assert sp.model is model
    assert list(model.hook_dict) == hook_names
    assert all(not hp._forward_hooks and not hp.fwd_hooks for hp in model.hook_dict.values())
    assert model.acts_to_saes == {}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert {n: s.hook_z_reshaping_mode for n, s in saes.items()} == modes


@pytest.mark.parametrize("name", ["r0", "m0", "z1", "z0_topk"])
def test_single_sae_recon_is_clean_activation_and_its_reconstruction(model, saes, batch, name):
    tokens, am, mask = batch
    sp = Splicer(model, saes)
    sae, h = saes[name], hook(saes, name)
    clean = sp.clean(tokens, am, [h])
    x, x_hat, feats = sp.run(sae_cond(saes, name), clean, mask).recon[name]
    n = int(mask.sum())
    assert x.shape == (n, D) and x_hat.shape == (n, D) and feats.shape == (n, sae.cfg.d_sae)
    assert torch.equal(x, clean.acts[h][mask].reshape(n, D))
    with torch.no_grad():
        want_feats = sae.encode(clean.acts[h])[mask]
        want_hat = sae.decode(sae.encode(clean.acts[h]))[mask].reshape(n, D)
    assert torch.allclose(feats, want_feats, atol=ATOL)
    assert torch.allclose(x_hat, want_hat, atol=ATOL)
    rx, rhat, rfeats = sp.reconstruct(clean, name, mask)
    assert torch.equal(rx, x) and torch.allclose(rhat, x_hat, atol=ATOL) and torch.allclose(rfeats, feats)


def test_group_recon_of_downstream_sae_sees_the_upstream_splice(model, saes, batch):
    tokens, am, mask = batch
    sp = Splicer(model, saes)
    cond = sae_cond(saes, "r0", "r1")
    clean = sp.clean(tokens, am, cond.hooks)
    x1 = sp.run(cond, clean, mask).recon["r1"][0]
    store: dict[str, torch.Tensor] = {}
    r0 = saes["r0"]
    with torch.no_grad():
        model.run_with_hooks(
            tokens,
            attention_mask=am,
            fwd_hooks=[
                ("blocks.0.hook_resid_post", lambda x, hook: torch.where(mask[..., None], r0.decode(r0.encode(x)), x)),
                ("blocks.1.hook_resid_post", lambda x, hook: store.setdefault("x", x.clone())),
            ],
        )
    assert torch.allclose(x1, store["x"][mask], atol=ATOL)
    assert not torch.allclose(x1, clean.acts["blocks.1.hook_resid_post"][mask], atol=1e-3)


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_batched_conditions_at_one_layer_match_one_by_one(model, saes, batch, ablation):
    tokens, am, mask = batch
    sp = Splicer(model, saes)
    conds = build_conditions(saes, groups=[["r0", "r1"], ["r0", "z1"]], ablation=ablation)
    clean = sp.clean(tokens, am, hooks_of(conds))
    means = ActivationMeans(hooks_of(conds))
    means.update(clean, mask)
    means = means.compute()
    one = [sp.run(c, clean, mask, means) for c in conds]
    many = sp.run_many(conds, clean, mask, means, chunk_size=4)
    for a, b in zip(one, many, strict=True):
        assert a.condition == b.condition
        assert (a.logits - b.logits).abs().max().item() < ATOL
        assert a.recon.keys() == b.recon.keys()
        for k in a.recon:
            assert all(torch.allclose(u, v, atol=ATOL) for u, v in zip(a.recon[k], b.recon[k], strict=True))


def test_activation_means_average_masked_positions_over_batches(model, saes, batch):
    tokens, am, mask = batch
    sp = Splicer(model, saes)
    hooks = [hook(saes, "r0"), hook(saes, "z1")]
    means = ActivationMeans(hooks)
    c1 = sp.clean(tokens, am, hooks)
    c2 = sp.clean(tokens[:2], am[:2], hooks)
    means.update(c1, mask)
    means.update(c2, mask[:2])
    got = means.compute()
    for h in hooks:
        want = torch.cat([c1.acts[h][mask], c2.acts[h][mask[:2]]]).double().mean(0).float()
        assert got[h].shape == c1.acts[h].shape[2:]
        assert torch.allclose(got[h], want, atol=1e-6)


def test_build_conditions_names_groups_and_shares_baselines(saes):
    conds = build_conditions(
        {k: saes[k] for k in ("r0", "r0_topk", "r1")}, groups=[["blocks.1.hook_resid_post", "r0"]], ablation="zero"
    )
    by_name = {c.name: c for c in conds}
    assert list(by_name) == [
        "r0",
        "r0_topk",
        "r1",
        "r1+r0",
        "zero_ablation@blocks.0.hook_resid_post",
        "zero_ablation@blocks.1.hook_resid_post",
        "zero_ablation@blocks.0.hook_resid_post+blocks.1.hook_resid_post",
    ]
    assert by_name["r0"].baseline == by_name["r0_topk"].baseline == "zero_ablation@blocks.0.hook_resid_post"
    assert by_name["r1+r0"].hooks == ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
    assert by_name["zero_ablation@blocks.1.hook_resid_post"].ablation == "zero"
    plain = build_conditions({"r0": saes["r0"]}, ablation=None, use_error_term=True)
    assert plain == [Condition("r0", ("r0",), ("blocks.0.hook_resid_post",), None, None, True)]
    star = build_conditions({k: saes[k] for k in ("r0", "z1")}, singles=False, groups=[["*"]], ablation="mean")
    assert [c.name for c in star] == ["r0+z1", "mean_ablation@blocks.0.hook_resid_post+blocks.1.attn.hook_z"]


def test_build_conditions_rejects_bad_groups_with_one_line_errors(saes):
    with pytest.raises(SaeevalError, match=r"'nope' is neither.*available: .*blocks\.0\.hook_resid_post.*r0"):
        build_conditions(saes, groups=[["nope"]])
    with pytest.raises(SaeevalError, match="two SAEs at blocks.0.hook_resid_post"):
        build_conditions(saes, groups=[["r0", "r0_topk"]])
    with pytest.raises(SaeevalError, match="several SAEs"):
        build_conditions(saes, groups=[["blocks.0.hook_resid_post"]])
    with pytest.raises(SaeevalError, match="ablation='ones'"):
        build_conditions(saes, ablation="ones")


def test_splicer_rejects_foreign_saes_and_attached_saes(model, saes, batch):
    tokens, am, _ = batch
    with pytest.raises(SaeevalError, match="blocks.7.hook_resid_post"):
        Splicer(model, {"x": make_sae("blocks.7.hook_resid_post", D)})
    with pytest.raises(SaeevalError, match="d_in=16"):
        Splicer(model, {"x": make_sae("blocks.0.hook_resid_post", 16)}).clean(tokens, am, ["blocks.0.hook_resid_post"])
    other = make_tiny_model(n_layers=2, d_model=D, n_heads=4)
    other.add_sae(saes["r0"])
    with pytest.raises(SaeevalError, match="reset_saes"):
        Splicer(other, saes).clean(tokens, am, ["blocks.0.hook_resid_post"])


def test_hook_z_sae_without_sae_lens_reshaping_gives_the_same_splice(model, batch):
    tokens, am, mask = batch
    on, off = make_sae("blocks.1.attn.hook_z", D, seed=7), make_sae("blocks.1.attn.hook_z", D, seed=7)
    off.turn_off_forward_pass_hook_z_reshaping()  # the flattened [.., H*dh] input sae_lens' evals feed it
    sp = Splicer(model, {"on": on, "off": off})
    clean = sp.clean(tokens, am, ["blocks.1.attn.hook_z"])
    a = sp.run(Condition("on", ("on",), ("blocks.1.attn.hook_z",)), clean, mask)
    b = sp.run(Condition("off", ("off",), ("blocks.1.attn.hook_z",)), clean, mask)
    assert torch.equal(a.logits, b.logits)
    assert all(torch.equal(u, v) for u, v in zip(a.recon["on"], b.recon["off"], strict=True))
    assert off.hook_z_reshaping_mode is False and on.hook_z_reshaping_mode is True


@pytest.mark.parametrize("name", ["default", "each_layer", "groups_example", "mean_ablation"])
def test_splice_configs_feed_build_conditions(saes, name):
    cfg = OmegaConf.load(Path(__file__).parent.parent / "saeeval" / "conf" / "splice" / f"{name}.yaml")
    conds = build_conditions({k: saes[k] for k in ("r0", "r1")}, **cfg)
    names = [c.name for c in conds if c.ablation is None]
    assert names[:2] == ["r0", "r1"]
    assert names[2:] == ([] if name in ("default", "mean_ablation") else ["r0+r1"])
    assert {c.ablation for c in conds} - {None} == {cfg.ablation}
