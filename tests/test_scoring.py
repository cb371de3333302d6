"""Chunked logits (saeeval.engine.unembed, saeeval.engine.scoring) against whole-logit references from the model's
own forward."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import make_sae
from sae_lens import HookedSAETransformer
from transformer_lens import HookedTransformerConfig

from saeeval.engine import module as module_mod
from saeeval.engine.conditions import build_conditions, hooks_of
from saeeval.engine.masks import Masks, TokenMask
from saeeval.engine.module import SAEEvalModule
from saeeval.engine.scoring import LMStates, answer_logit_diff, answer_rows, rows_per_chunk, score_lm
from saeeval.engine.splicing import Splicer, conditions_per_forward
from saeeval.engine.unembed import Unembed
from saeeval.metrics.lm_loss import KLDivergence, NextTokenCrossEntropy
from saeeval.profiling import peak_tensor_bytes

torch.set_num_threads(1)
D, V = 32, 211
HOOKS = ("blocks.0.hook_resid_post", "blocks.1.attn.hook_z", "blocks.0.hook_mlp_out")


def make_model(soft_cap: float = -1.0, d_vocab: int = V, d_model: int = D) -> HookedSAETransformer:
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=d_model,
        n_heads=4,
        d_head=d_model // 4,
        d_mlp=4 * d_model,
        d_vocab=d_vocab,
        n_ctx=32,
        act_fn="gelu",
        normalization_type="LN",
        output_logits_soft_cap=soft_cap,
        seed=0,
    )
    model = HookedSAETransformer(cfg).eval()
    with torch.no_grad():  # logits large enough that a soft-cap of 3 really bends them
        model.unembed.W_U.mul_(4.0)
    return model


@pytest.fixture(scope="module")
def saes():
    return {h: make_sae(h, D, seed=i) for i, h in enumerate(HOOKS)}


def make_batch(
    n: int = 3, t: int = 10, seed: int = 0, vocab: int = V
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, vocab, (n, t), generator=gen)
    am = torch.ones(n, t, dtype=torch.long)
    am[1, :3] = 0  # left padding
    tokens[am == 0] = 0
    mask = am.bool().clone()
    mask[0, 4] = False  # a masked token mid-sequence: CE drops both positions around it, KL one
    return tokens, am, mask


def whole_logits(model, splicer, cond, tokens, am, mask) -> torch.Tensor:
    """The condition's logits from the model's own full forward (TransformerLens unembed and soft-cap)."""

    def make(name):
        def hook(x, hook):
            m = mask.reshape(*mask.shape, *([1] * (x.ndim - 2)))
            if cond.ablation == "zero":
                new = torch.zeros_like(x)
            else:
                sae = splicer.saes[name]
                new = sae.decode(sae.encode(x))
            return torch.where(m, new, x)

        return hook

    hooks = [(h, make(n)) for h, n in zip(cond.hooks, cond.saes or cond.hooks, strict=True)]
    with torch.no_grad():
        return model.run_with_hooks(tokens, attention_mask=am, fwd_hooks=hooks)


@pytest.mark.parametrize("soft_cap", [-1.0, 3.0])
def test_unembed_rows_and_columns_equal_the_models_own_logits(soft_cap):
    model = make_model(soft_cap)
    tokens, am, _ = make_batch()
    splicer = Splicer(model, {})
    clean = splicer.clean(tokens, am, [])
    with torch.no_grad():
        want = model(tokens, attention_mask=am)
    torch.testing.assert_close(Unembed(model)(clean.final), want, rtol=1e-6, atol=1e-5)
    ids = torch.tensor([5, 17, 200])
    cols = Unembed(model).columns(clean.final[:, -1], ids)
    torch.testing.assert_close(cols, want[torch.arange(3), -1, ids], rtol=1e-6, atol=1e-5)
    if soft_cap > 0:
        assert want.abs().max() > 0.9 * soft_cap  # the cap is really in play


@pytest.mark.parametrize("soft_cap", [-1.0, 3.0])
def test_half_precision_logits_and_answer_columns_are_float32_sums_of_the_half_values(soft_cap, monkeypatch):
    """A bf16 model's logits are the float32 (not bf16-rounded) dot products of its bf16 residual and W_U: one bf16
    step at these logits is ~0.03, the float32 computation agrees to 1e-5. The vocabulary is converted in slices."""
    monkeypatch.setattr("saeeval.engine.unembed.SLICE_ELEMENTS", D * 50)  # 5 slices of W_U
    model = make_model(soft_cap).to(torch.bfloat16)
    tokens, am, _ = make_batch()
    final = Splicer(model, {}).clean(tokens, am, []).final
    assert final.dtype == torch.bfloat16
    w, b = model.unembed.W_U.double(), model.unembed.b_U.double()
    want = final.double() @ w + b
    if soft_cap > 0:
        want = soft_cap * torch.tanh(want / soft_cap)
    with torch.no_grad():  # as in scoring: the sliced conversion writes into one buffer
        got = Unembed(model)(final)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    assert (want.bfloat16().double() - want).abs().max() > 1e-3  # rounding to bf16 would fail the line above
    correct, incorrect = torch.tensor([5, 17, 200]), torch.tensor([9, 3, 100])
    ld = answer_logit_diff(Unembed(model), final, correct, incorrect)
    rows = torch.arange(3)
    torch.testing.assert_close(ld.double(), want[rows, -1, correct] - want[rows, -1, incorrect], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scoring_under_autocast_equals_scoring_without(saes, dtype):
    """`*-mixed` precision runs the test step in autocast; the unembedding, log-softmax and KL must not follow it
    (a float32 buffer would meet a bf16 matmul)."""
    model = make_model().to(dtype)
    splicer = Splicer(model, {h: make_sae(h, D, seed=i).to(dtype=dtype) for i, h in enumerate(HOOKS)})
    tokens, am, mask = make_batch()
    cond = build_conditions(splicer.saes)[0]
    clean = splicer.clean(tokens, am, hooks_of([cond]))
    final = splicer.run(cond, clean, mask).final

    def scores():
        states = LMStates(NextTokenCrossEntropy(), KLDivergence())
        clean_states = LMStates(NextTokenCrossEntropy())
        score_lm(Unembed(model), clean.final, tokens, mask, [(final, states)], clean_states, chunk=7)
        ld = answer_logit_diff(Unembed(model), final, torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6]))
        return states.ce.compute(), states.kl.compute(), clean_states.ce.compute(), ld

    plain = scores()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = scores()
    for a, b in zip(plain, mixed, strict=True):
        assert b.dtype == a.dtype
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


def test_unembed_allocates_only_the_chunks_logits_never_a_copy_of_w_u():
    model = make_model(soft_cap=30.0, d_vocab=50_000, d_model=16)
    rows = torch.randn(4, 16)
    peak = peak_tensor_bytes(lambda: Unembed(model)(rows))
    w_u = model.unembed.W_U.numel() * 4
    assert peak is not None and peak <= 4 * 50_000 * 4 * 1.1 < w_u / 3


@pytest.mark.parametrize("soft_cap", [-1.0, 3.0])
@pytest.mark.parametrize("chunk", [1, 7, None])
@pytest.mark.parametrize("full_mask", [True, False])
def test_chunked_scores_equal_whole_logit_metrics(saes, soft_cap, chunk, full_mask):
    """CE and KL from final residuals (pull-back KL without a cap, direct KL with one) equal the metrics' own
    update() on whole logits of independent full forwards, to 1e-6."""
    model = make_model(soft_cap)
    tokens, am, mask = make_batch()
    if full_mask:
        mask = torch.ones_like(mask)
    splicer = Splicer(model, saes)
    conds = build_conditions(saes)
    clean = splicer.clean(tokens, am, hooks_of(conds))
    outs = splicer.run_many(conds, clean, mask)
    clean_ce, ces, kls = (
        NextTokenCrossEntropy(),
        [NextTokenCrossEntropy() for _ in conds],
        [KLDivergence() for _ in conds],
    )
    score_lm(
        splicer.unembed,
        clean.final,
        tokens,
        mask,
        [(o.final, LMStates(ce, kl)) for o, ce, kl in zip(outs, ces, kls, strict=True)],
        LMStates(clean_ce),
        chunk=chunk,
    )

    with torch.no_grad():
        clean_logits = model(tokens, attention_mask=am)
    ref_ce = NextTokenCrossEntropy()
    ref_ce.update(clean_logits, tokens, mask)
    assert float(clean_ce.compute()) == pytest.approx(float(ref_ce.compute()), rel=1e-6)
    assert float(clean_ce.count) == float(ref_ce.count)
    for cond, ce, kl in zip(conds, ces, kls, strict=True):
        logits = whole_logits(model, splicer, cond, tokens, am, mask)
        want_ce, want_kl = NextTokenCrossEntropy(), KLDivergence()
        want_ce.update(logits, tokens, mask)
        want_kl.update(clean_logits, logits, mask)
        assert float(ce.compute()) == pytest.approx(float(want_ce.compute()), rel=1e-6), cond.name
        assert float(kl.compute()) == pytest.approx(float(want_kl.compute()), rel=1e-6), cond.name
        assert float(kl.compute()) > 1e-3 and float(kl.count) == int(mask.sum())


def test_answer_logit_diff_is_the_difference_of_the_last_columns_logits():
    model = make_model(3.0)
    tokens, am, _ = make_batch()
    clean = Splicer(model, {}).clean(tokens, am, [])
    correct, incorrect = torch.tensor([1, 2, 3]), torch.tensor([9, 8, 7])
    with torch.no_grad():
        last = model(tokens, attention_mask=am)[:, -1]
    want = last[torch.arange(3), correct] - last[torch.arange(3), incorrect]
    torch.testing.assert_close(
        answer_logit_diff(Unembed(model), clean.final, correct, incorrect), want, rtol=1e-5, atol=1e-5
    )


def test_peak_memory_follows_the_chunk_not_the_vocabulary_or_the_number_of_conditions():
    """At V = 40k, one condition's whole logits are 7.7 MB; scoring 1 or 6 conditions in chunks of 4 positions
    allocates a small, equal amount (the chunk's few [4, V] buffers), and less than one condition's logits."""
    vocab = 40_000
    model = make_model(d_vocab=vocab, d_model=16)
    tokens, am, mask = make_batch(n=4, t=12, vocab=vocab)
    clean = Splicer(model, {}).clean(tokens, am, [])
    unembed = Unembed(model)

    def peak(n_cond: int) -> int:
        finals = [clean.final + 0.01 * i for i in range(1, n_cond + 1)]
        conditions = [(f, LMStates(NextTokenCrossEntropy(), KLDivergence())) for f in finals]
        got = peak_tensor_bytes(lambda: score_lm(unembed, clean.final, tokens, mask, conditions, chunk=4))
        assert got is not None
        return got

    whole = tokens.numel() * vocab * 4
    one, six = peak(1), peak(6)
    assert six <= one * 1.1 + 64 * 1024
    assert six < whole / 3


def _module(model, saes, **kwargs) -> SAEEvalModule:
    conds = build_conditions(saes)
    return SAEEvalModule(model, saes, conds, Masks(), [0], has_answers=True, num_groups=1, **kwargs)


def _run(module: SAEEvalModule, batches) -> dict[str, list[float]]:
    for i, (tokens, am, _) in enumerate(batches):
        n = tokens.shape[0]
        module.test_step(
            {
                "tokens": tokens,
                "attention_mask": am,
                "correct": torch.arange(1, n + 1),
                "incorrect": torch.arange(20, 20 + n),
                "group": torch.zeros(n, dtype=torch.long),
                "example_id": torch.arange(n) + 10 * i,
            },
            i,
        )
    return {
        "ce": [float(m.ce.compute()) for m in module.metrics],
        "kl": [float(m.kl.compute()) for m in module.metrics[1:]],
        "ld": [float(m.ld.compute()["logit_diff"]) for m in module.metrics],
    }


def test_test_step_scores_equal_whole_logit_references_in_groups_and_batched_forwards(saes, monkeypatch):
    """SAEEvalModule.test_step (chunked, all conditions in one group) against metrics fed whole logits of full
    forwards; holding one final residual per group, or batching 3 conditions per forward, changes nothing."""
    model = make_model()
    batches = [make_batch(seed=1), make_batch(seed=2)]
    got = _run(_module(model, saes), batches)

    conds = build_conditions(saes)
    splicer = Splicer(model, saes)
    want_ce = [NextTokenCrossEntropy() for _ in range(len(conds) + 1)]
    want_kl = [KLDivergence() for _ in conds]
    want_ld: list[list[float]] = [[] for _ in range(len(conds) + 1)]
    for tokens, am, _ in batches:
        mask = TokenMask()(tokens, am, None, [0])
        n = tokens.shape[0]
        with torch.no_grad():
            clean = model(tokens, attention_mask=am)
        for i, logits in enumerate([clean] + [whole_logits(model, splicer, c, tokens, am, mask) for c in conds]):
            want_ce[i].update(logits, tokens, mask)
            if i:
                want_kl[i - 1].update(clean, logits, mask)
            want_ld[i] += (
                logits[torch.arange(n), -1, torch.arange(1, n + 1)]
                - logits[torch.arange(n), -1, torch.arange(20, 20 + n)]
            ).tolist()
    assert got["ce"] == pytest.approx([float(m.compute()) for m in want_ce], rel=1e-6)
    assert got["kl"] == pytest.approx([float(m.compute()) for m in want_kl], rel=1e-6)
    assert got["ld"] == pytest.approx([sum(v) / len(v) for v in want_ld], rel=1e-5, abs=1e-5)

    monkeypatch.setattr(module_mod, "FINALS_BUDGET", 1)
    grouped = _run(_module(model, saes), batches)
    monkeypatch.undo()
    batched = _run(_module(model, saes, condition_batch=3), batches)
    for other in (grouped, batched):
        for key in got:
            assert other[key] == pytest.approx(got[key], rel=1e-6), key


def test_one_condition_per_forward_on_cpu_and_by_free_memory_on_cuda(monkeypatch):
    model = make_model()
    assert conditions_per_forward(model, (8, 128)) == 1
    assert rows_per_chunk(256_000, "cpu") == 65  # 16M logits
    gib = 1 << 30
    fake = SimpleNamespace(cfg=SimpleNamespace(device="cuda", d_model=768, n_heads=12, d_mlp=3072, dtype=torch.float32))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free[0], 80 * gib))
    # one condition at B=8, T=128: 8·128·(8·768 + 3·12·128 + 3·3072)·4 bytes = 78 MiB
    free = [100 * gib]
    assert conditions_per_forward(fake, (8, 128)) == 8  # plenty: the cap
    free = [400 * (1 << 20)]
    assert conditions_per_forward(fake, (8, 128)) == 1  # 100 MiB share: one
    free = [1 * gib]
    assert conditions_per_forward(fake, (8, 128)) == 3  # 256 MiB share: three
    assert rows_per_chunk(256_000, "cuda") == gib // 4 // (16 * 256_000)
    # SAE latents count: Σ d_sae = 16384 adds 8·128·2·16384·4 bytes = 128 MiB per condition (206 MiB in all)
    assert conditions_per_forward(fake, (8, 128), latents=16_384) == 1
    free = [4 * gib]
    assert conditions_per_forward(fake, (8, 128), latents=16_384) == 4  # 1 GiB share / 206 MiB
    # generating 64 tokens adds each row's KV cache: 8·2·12 layers·12 heads·64·(128 + 64)·4 bytes = 108 MiB
    fake.cfg.n_layers, fake.cfg.d_head = 12, 64
    assert conditions_per_forward(fake, (8, 128), latents=16_384, new_tokens=64) == 3  # 1 GiB / 314 MiB


@pytest.mark.parametrize("soft_cap", [-1.0, 3.0])
def test_paired_ce_differences_and_kl_stderr_equal_per_position_references(saes, soft_cap):
    """The states behind the unreliable flags: per CE position, the condition's CE minus clean's (pull-back and
    direct paths), and KL per scored position, against whole-logit references; mean and standard error."""
    import torch.nn.functional as F

    from saeeval.metrics.functional.lm_loss import IGNORE, next_token_targets
    from saeeval.metrics.stats import mean_and_stderr

    model = make_model(soft_cap)
    batches = [make_batch(seed=3), make_batch(seed=4)]
    module = _module(model, saes)
    _run(module, batches)
    conds = build_conditions(saes)
    splicer = Splicer(model, saes)
    diffs: list[list[torch.Tensor]] = [[] for _ in conds]
    kls: list[list[torch.Tensor]] = [[] for _ in conds]
    for tokens, am, _ in batches:
        mask = TokenMask()(tokens, am, None, [0])
        targets = next_token_targets(tokens, mask)
        ce_pos = targets != IGNORE
        with torch.no_grad():
            clean = model(tokens, attention_mask=am).double()
        clean_nll = F.cross_entropy(clean[ce_pos], targets[ce_pos], reduction="none")
        for i, c in enumerate(conds):
            logits = whole_logits(model, splicer, c, tokens, am, mask).double()
            diffs[i].append(F.cross_entropy(logits[ce_pos], targets[ce_pos], reduction="none") - clean_nll)
            p = F.log_softmax(clean, -1)
            kls[i].append((p.exp() * (p - F.log_softmax(logits, -1))).sum(-1)[mask])

    def mean_se(values: list[torch.Tensor]) -> tuple[float, float]:
        v = torch.cat(values)
        m, se = mean_and_stderr(torch.tensor(float(v.numel()), dtype=torch.float64), v.sum(), v.square().sum())
        return float(m), float(se)

    for i, m in enumerate(module.metrics[1:]):
        want_mean, want_se = mean_se(diffs[i])
        assert float(m.ce_delta.compute()) == pytest.approx(want_mean, rel=1e-5, abs=1e-6)
        assert float(m.ce_delta.stderr()) == pytest.approx(want_se, rel=1e-4)
        assert float(m.kl.stderr()) == pytest.approx(mean_se(kls[i])[1], rel=1e-4)


def test_answer_rows_take_the_named_column_per_row_or_the_last_one():
    final = torch.arange(2 * 3 * 5 * 4, dtype=torch.float32).reshape(6, 5, 4)  # 3 conditions x 2 rows stacked
    positions = {"END": torch.tensor([2, 4])}
    torch.testing.assert_close(answer_rows(final, positions, None, copies=3), final[:, -1:])
    got = answer_rows(final, positions, "END", copies=3)
    want = torch.stack([final[i, [2, 4][i % 2]] for i in range(6)])[:, None]
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(answer_rows(final[:2], positions, "END"), want[:2])
