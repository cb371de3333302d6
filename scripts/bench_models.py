"""The benchmark's stand-ins: random-weight models of real shapes, calibrated random SAEs, fixed random tokens.

Shapes (`SHAPES`): `dev` (the development benchmark: 12 layers, d_model 256, vocab 5000, 8 SAEs at mixed hooks),
`gpt2-small` (GPT-2 small's shape with 12 SAEs of width 24576 at blocks.L.hook_resid_pre, like gpt2-small-res-jb),
`gemma-2-2b-narrow` (Gemma-2-2b's config from TransformerLens, vocab 256,000 and soft-caps, cut to 2 layers, with
2 SAEs of width 16384: the memory case), `tiny` (seconds; correctness only). Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sae_lens import HookedSAETransformer, StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import HookedTransformerConfig
from transformer_lens import loading_from_pretrained as tl_loading

BOS = 0
COMPARED = (
    "ce_loss_without_sae",
    "ce_loss_with_sae",
    "ce_loss_with_ablation",
    "kl_div_with_sae",
    "kl_div_with_ablation",
    "explained_variance",
    "mse",
    "l0",
    "l1",
    "cossim",
    "l2_ratio",
)
"""sae_lens run_evals keys the benchmark compares (its names; SAEBench reports the same ones); the derived ce/kl
scores follow from them."""


@dataclass(frozen=True)
class Setup:
    """Model shape, SAE hooks (a hook listed twice gets two SAEs) and token batches."""

    n_layers: int
    d_model: int
    n_heads: int
    d_vocab: int
    d_sae: int
    hooks: tuple[str, ...]
    batch: int
    seq: int
    n_batches: int
    kind: str = "gpt2"
    """gpt2: a GPT-2-style HookedTransformerConfig; gemma-2-2b: TransformerLens's own Gemma-2-2b config, cut."""


FULL = Setup(
    n_layers=12,
    d_model=256,
    n_heads=4,
    d_vocab=5000,
    d_sae=1024,
    batch=8,
    seq=128,
    n_batches=2,
    hooks=(
        "blocks.0.hook_resid_post",
        "blocks.2.attn.hook_z",
        "blocks.4.hook_resid_post",
        "blocks.4.hook_resid_post",
        "blocks.6.hook_mlp_out",
        "blocks.8.hook_resid_post",
        "blocks.10.hook_resid_pre",
        "blocks.11.hook_resid_post",
    ),
)
TINY = Setup(
    n_layers=2,
    d_model=32,
    n_heads=4,
    d_vocab=97,
    d_sae=64,
    batch=2,
    seq=12,
    n_batches=2,
    hooks=(
        "blocks.0.hook_resid_pre",
        "blocks.0.attn.hook_z",
        "blocks.0.hook_resid_post",
        "blocks.0.hook_resid_post",
        "blocks.0.hook_mlp_out",
        "blocks.1.attn.hook_z",
        "blocks.1.hook_resid_pre",
        "blocks.1.hook_resid_post",
    ),
)


GPT2_SMALL = Setup(
    n_layers=12,
    d_model=768,
    n_heads=12,
    d_vocab=50257,
    d_sae=24576,
    batch=4,
    seq=64,
    n_batches=1,
    hooks=tuple(f"blocks.{layer}.hook_resid_pre" for layer in range(12)),
)
GEMMA_NARROW = Setup(
    n_layers=2,
    d_model=2304,
    n_heads=8,
    d_vocab=256_000,
    d_sae=16384,
    batch=8,
    seq=12,
    n_batches=1,
    hooks=("blocks.0.hook_resid_post", "blocks.1.hook_resid_post"),
    kind="gemma-2-2b",
)
SHAPES = {"dev": FULL, "gpt2-small": GPT2_SMALL, "gemma-2-2b-narrow": GEMMA_NARROW, "tiny": TINY}


def make_model(s: Setup) -> HookedSAETransformer:
    """Random weights (seed 0) in float32 on CPU."""
    if s.kind == "gemma-2-2b":
        # TransformerLens's Gemma-2-2b architecture, from its name-based table (no download); n_ctx cut because the
        # causal-mask buffers are n_ctx² per layer (8192² would be 64 MiB each).
        gemma = tl_loading.convert_hf_model_config("google/gemma-2-2b")
        gemma.pop("tokenizer_name", None)
        gemma.update(
            n_layers=s.n_layers,
            attn_types=gemma["attn_types"][: s.n_layers],
            n_ctx=max(s.seq, 16),
            device="cpu",
            dtype=torch.float32,
            seed=0,
        )
        return HookedSAETransformer(HookedTransformerConfig(**gemma)).eval()
    cfg = HookedTransformerConfig(
        n_layers=s.n_layers,
        d_model=s.d_model,
        n_heads=s.n_heads,
        d_head=s.d_model // s.n_heads,
        d_mlp=4 * s.d_model,
        d_vocab=s.d_vocab,
        n_ctx=max(s.seq, 16),
        act_fn="gelu_new",
        normalization_type="LN",
        seed=0,
    )
    return HookedSAETransformer(cfg).eval()


def make_batches(s: Setup, seed: int) -> list[torch.Tensor]:
    """Random tokens (never BOS) with BOS at position 0 only."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(s.n_batches):
        tokens = torch.randint(1, s.d_vocab, (s.batch, s.seq), generator=gen)
        tokens[:, 0] = BOS
        batches.append(tokens)
    return batches


@torch.no_grad()
def make_sae(hook: str, x: torch.Tensor, d_sae: int, seed: int, l0: float = 0.04) -> StandardSAE:
    """A random ReLU SAE calibrated on activations `x [N, d_in]` so EV, L0 and CE land in a realistic range.

    Features are ± the principal directions of `x` (tied encoder/decoder) then random unit directions; one
    threshold lets about `l0`·d_sae features fire per token; the decoder scale is the least-squares one.
    """
    gen = torch.Generator().manual_seed(seed)
    reshape = "hook_z" if hook.endswith("hook_z") else "none"
    cfg = StandardSAEConfig(
        d_in=x.shape[1], d_sae=d_sae, metadata=SAEMetadata(hook_name=hook), reshape_activations=reshape
    )
    sae = StandardSAE(cfg)
    centred = x - x.mean(0)
    pcs = torch.linalg.svd(centred, full_matrices=False).Vh
    extra = torch.randn(max(0, d_sae - 2 * pcs.shape[0]), x.shape[1], generator=gen)
    w_dec = torch.cat([pcs, -pcs, extra / extra.norm(dim=1, keepdim=True)])[:d_sae]
    pre = centred @ w_dec.T
    threshold = torch.quantile(pre.flatten()[: 1 << 20], 1 - l0)
    x_hat = torch.relu(pre - threshold) @ w_dec
    scale = (centred * x_hat).sum() / x_hat.pow(2).sum().clamp_min(1e-12)
    sae.W_enc.copy_(w_dec.T)
    sae.b_enc.fill_(-float(threshold))
    sae.W_dec.copy_(w_dec * scale)
    sae.b_dec.copy_(x.mean(0))
    return sae.eval()


@torch.no_grad()
def make_saes(model: HookedSAETransformer, s: Setup) -> dict[str, StandardSAE]:
    calib = make_batches(Setup(**{**s.__dict__, "n_batches": 1}), seed=1)[0]
    _, cache = model.run_with_cache(calib, names_filter=list(set(s.hooks)))
    saes: dict[str, StandardSAE] = {}
    for i, hook in enumerate(s.hooks):
        name = hook if hook not in saes else f"{hook}#{s.hooks[:i].count(hook) + 1}"
        saes[name] = make_sae(hook, cache[hook].flatten(2)[:, 1:].reshape(-1, s.d_model), s.d_sae, seed=100 + i)
    return saes


class FixedTokens:
    """Stand-in for sae_lens's ActivationsStore: serves the fixed batches in order, from the start on reset."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.batches = batches
        self.store_batch_size_prompts = batches[0].shape[0]
        self.context_size = batches[0].shape[1]
        self.reset_input_dataset()

    def reset_input_dataset(self) -> None:
        self._next = iter(self.batches)

    def get_batch_tokens(self, batch_size: int) -> torch.Tensor:
        tokens = next(self._next)
        assert tokens.shape[0] == batch_size
        return tokens
