"""Benchmark saeeval against SAELens's own evals (sae_lens.evals.run_evals) in one process, on the same tokens.

A random GPT-2-shaped model (12 layers) and 8 random SAEs at different layers (two share a hook) are evaluated
for CE (clean / spliced / zero-ablated), KL (spliced / ablated), explained variance, MSE, L0, L1, cosine, L2 ratio:
  saeeval   SAEEvalModule.test_step called directly per batch (no Trainer): one clean pass, a suffix pass per
            condition (8 SAEs + one zero-ablation per hook = 15), metric updates; metrics computed at the end.
  sae_lens  run_evals per SAE with a stand-in ActivationsStore that serves the same fixed batches: per batch a
            clean, a spliced and an ablated full forward, then a forward up to the hook for the sparsity metrics.
  floor     the forward work alone: one clean forward + each condition's suffix forward, no hooks, SAEs or metrics.
Runs alternate (warm-up first); speedup and floor_ratio are medians of per-round ratios. Memory is measured once per
contender after the timing, under torch's profiler: the peak CPU tensor memory the call allocates above what was
live when it started (model, SAEs and tokens are not counted; the floor's cached inputs neither).

    python scripts/bench.py                # full mode: about 4 minutes on one core
    python scripts/bench.py --tiny         # correctness only (2 layers, a few tokens)

Threads default to 1: on a 2-core machine shared with other jobs, 2 intra-op threads oversubscribe the cores and
every timing (the floor included) swings 10-20x from round to round. Use --threads 2 on a quiet machine.

Mask: every position is counted by default. With --ignore-bos both sides drop BOS (sae_lens ignore_tokens), but
sae_lens then still zero-ablates the BOS position while saeeval ablates only masked-in positions, so the ablated
CE/KL are printed but not compared. Last line: ``speedup=<x> max_rel_diff=<y> floor_ratio=<z>``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from sae_lens import HookedSAETransformer, StandardSAE, StandardSAEConfig
from sae_lens.evals import EvalConfig, run_evals
from sae_lens.saes.sae import SAEMetadata
from sae_lens.training.activation_scaler import ActivationScaler
from transformer_lens import HookedTransformerConfig

from saeeval.masks import TokenMask
from saeeval.module import SAEEvalModule
from saeeval.profiling import peak_tensor_bytes
from saeeval.splicing import Splicer, build_conditions, hooks_of

BOS = 0
TOLERANCE = 1e-4
TARGETS = {"speedup": 3.0, "floor_ratio": 1.3}
COMPARED = ("ce_loss_without_sae", "ce_loss_with_sae", "ce_loss_with_ablation", "kl_div_with_sae",
            "kl_div_with_ablation", "explained_variance", "mse", "l0", "l1", "cossim", "l2_ratio")
"""sae_lens run_evals keys compared (its names); the derived ce/kl scores follow from them."""
ABLATED_KEYS = ("ce_loss_with_ablation", "kl_div_with_ablation")


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


FULL = Setup(
    n_layers=12, d_model=256, n_heads=4, d_vocab=5000, d_sae=1024, batch=8, seq=128, n_batches=2,
    hooks=("blocks.0.hook_resid_post", "blocks.2.attn.hook_z", "blocks.4.hook_resid_post", "blocks.4.hook_resid_post",
           "blocks.6.hook_mlp_out", "blocks.8.hook_resid_post", "blocks.10.hook_resid_pre", "blocks.11.hook_resid_post"),
)
TINY = Setup(
    n_layers=2, d_model=32, n_heads=4, d_vocab=97, d_sae=64, batch=2, seq=12, n_batches=2,
    hooks=("blocks.0.hook_resid_pre", "blocks.0.attn.hook_z", "blocks.0.hook_resid_post", "blocks.0.hook_resid_post",
           "blocks.0.hook_mlp_out", "blocks.1.attn.hook_z", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"),
)


def make_model(s: Setup) -> HookedSAETransformer:
    cfg = HookedTransformerConfig(
        n_layers=s.n_layers, d_model=s.d_model, n_heads=s.n_heads, d_head=s.d_model // s.n_heads,
        d_mlp=4 * s.d_model, d_vocab=s.d_vocab, n_ctx=max(s.seq, 16), act_fn="gelu_new", normalization_type="LN",
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
    cfg = StandardSAEConfig(d_in=x.shape[1], d_sae=d_sae, metadata=SAEMetadata(hook_name=hook),
                            reshape_activations=reshape)
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


# --- the three contenders -------------------------------------------------------------------------------------

def run_saeeval(model: Any, saes: dict, batches: list[torch.Tensor], ignore_bos: bool) -> dict[str, dict]:
    """What `python -m saeeval` does per batch (SAEEvalModule.test_step), then each metric's compute()."""
    conditions = build_conditions(saes)
    module = SAEEvalModule(model, saes, conditions, TokenMask(exclude_special=ignore_bos), [BOS],
                           has_answers=False, num_groups=0)
    for i, tokens in enumerate(batches):
        module.test_step({"tokens": tokens, "attention_mask": torch.ones_like(tokens)}, i)
    clean, by_name = module.metrics[0], dict(zip([c.name for c in conditions], module.metrics[1:]))
    out = {}
    for cond in conditions:
        if cond.ablation is not None:
            continue
        m, base = by_name[cond.name], by_name[cond.baseline]
        recon = {k: float(v) for k, v in m.recon[0].compute().items()}
        ce, ce_clean, ce_abl = float(m.ce.compute()), float(clean.ce.compute()), float(base.ce.compute())
        kl, kl_abl = float(m.kl.compute()), float(base.kl.compute())
        out[cond.name] = {
            "ce_loss_without_sae": ce_clean, "ce_loss_with_sae": ce, "ce_loss_with_ablation": ce_abl,
            "kl_div_with_sae": kl, "kl_div_with_ablation": kl_abl,
            "explained_variance": recon["explained_variance"], "mse": recon["mse"], "l0": recon["l0"],
            "l1": recon["l1"], "cossim": recon["cosine_similarity"], "l2_ratio": recon["l2_ratio"],
        }
    return out


def run_sae_lens(model: Any, saes: dict, batches: list[torch.Tensor], ignore_bos: bool) -> dict[str, dict]:
    """sae_lens 6.54's run_evals for each SAE on the same batches, every metric saeeval reports switched on."""
    config = EvalConfig(
        batch_size_prompts=batches[0].shape[0], n_eval_reconstruction_batches=len(batches), compute_kl=True,
        compute_ce_loss=True, n_eval_sparsity_variance_batches=len(batches), compute_l2_norms=True,
        compute_sparsity_metrics=True, compute_variance_metrics=True, compute_featurewise_density_statistics=True,
        library_version="bench", git_hash="bench",
    )
    out = {}
    for name, sae in saes.items():
        metrics, _ = run_evals(sae, FixedTokens(batches), model, ActivationScaler(), config,
                               exclude_special_tokens=[BOS] if ignore_bos else False)
        flat = {k: v for group in metrics.values() for k, v in group.items()}
        out[name] = {k: float(flat[k]) for k in COMPARED}
    return out


def floor_inputs(model: Any, saes: dict, batches: list[torch.Tensor]) -> list[tuple]:
    """Per batch: tokens, attention mask, and (start layer, residual entering it) for every condition's suffix."""
    splicer, conditions = Splicer(model, saes), build_conditions(saes)
    hooks = hooks_of(conditions)
    prepared = []
    for tokens in batches:
        am = torch.ones_like(tokens)
        clean = splicer.clean(tokens, am, hooks)
        starts = [splicer.start_layer(c) for c in conditions]
        prepared.append((tokens, am, [(s, clean.resid_pre[s]) for s in starts]))
    return prepared


@torch.no_grad()
def run_floor(model: Any, prepared: list[tuple]) -> None:
    """The unavoidable forward work: one clean forward and each condition's suffix forward, nothing else."""
    for tokens, am, suffixes in prepared:
        model(tokens, attention_mask=am, return_type="logits")
        for start, resid in suffixes:
            model(resid, start_at_layer=start, attention_mask=am, return_type="logits")


# --- measuring ------------------------------------------------------------------------------------------------

def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def peak_tensor_mib(fn: Callable[[], Any]) -> float | None:
    """Peak MiB of CPU tensor memory one call allocates above what was live when it started (None: unavailable)."""
    peak = peak_tensor_bytes(fn)
    return None if peak is None else peak / 2**20


def max_rel_diff(ours: dict, theirs: dict, skip: tuple[str, ...]) -> tuple[float, str]:
    worst, where = 0.0, ""
    for sae, metrics in theirs.items():
        for key, want in metrics.items():
            if key in skip:
                continue
            got = ours[sae][key]
            rel = abs(got - want) / max(abs(want), abs(got), 1e-12)
            if rel > worst or rel != rel:
                worst, where = rel, f"{sae} {key}: saeeval {got:.9g} vs sae_lens {want:.9g}"
    return worst, where


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="2-layer model, a few tokens: correctness check only")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds after one warm-up (default 5; tiny 1)")
    p.add_argument("--batch", type=int, default=None, help="prompts per batch")
    p.add_argument("--seq", type=int, default=None, help="tokens per prompt")
    p.add_argument("--n-batches", type=int, default=None, help="batches per evaluation")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads; 2 on a quiet 2-core machine, 1 when other jobs share the cores")
    p.add_argument("--ignore-bos", action="store_true", help="drop BOS from metrics (ablated CE/KL not compared)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = TINY if args.tiny else FULL
    s = Setup(**{**base.__dict__, **{k: getattr(args, k) for k in ("batch", "seq", "n_batches")
                                      if getattr(args, k) is not None}})
    repeats = args.repeats if args.repeats is not None else (1 if args.tiny else 5)
    warmup = 0 if args.tiny else 1

    model = make_model(s)
    saes = make_saes(model, s)
    batches = make_batches(s, seed=2)
    prepared = floor_inputs(model, saes, batches)
    n_cond = len(build_conditions(saes))
    print(f"model: {s.n_layers} layers, d_model {s.d_model}, d_vocab {s.d_vocab}; {len(saes)} SAEs "
          f"(d_sae {s.d_sae}) -> {n_cond} saeeval conditions; {s.n_batches} batches x {s.batch} x {s.seq} tokens; "
          f"{torch.get_num_threads()} threads")

    contenders = {
        "saeeval": lambda: run_saeeval(model, saes, batches, args.ignore_bos),
        "sae_lens": lambda: run_sae_lens(model, saes, batches, args.ignore_bos),
        "floor": lambda: run_floor(model, prepared),
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    results: dict[str, Any] = {}
    for r in range(warmup + repeats):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in order:
            seconds, results[name] = timed(contenders[name])
            if r >= warmup:
                times[name].append(seconds)
        if r >= warmup:
            print(f"round {r - warmup + 1}: " + ", ".join(f"{k} {times[k][-1]:.3f}s" for k in contenders))
    peaks = {name: peak_tensor_mib(fn) for name, fn in contenders.items()}

    skip = ABLATED_KEYS if args.ignore_bos else ()
    rel, where = max_rel_diff(results["saeeval"], results["sae_lens"], skip)
    speedup = statistics.median(b / a for a, b in zip(times["saeeval"], times["sae_lens"]))
    floor_ratio = statistics.median(a / f for a, f in zip(times["saeeval"], times["floor"]))

    print("\nper SAE (saeeval):  CE clean / spliced / ablated   KL spliced / ablated   EV   L0")
    for name, m in results["saeeval"].items():
        print(f"  {name:28s} {m['ce_loss_without_sae']:.4f} / {m['ce_loss_with_sae']:.4f} / "
              f"{m['ce_loss_with_ablation']:.4f}   {m['kl_div_with_sae']:.4f} / {m['kl_div_with_ablation']:.4f}   "
              f"{m['explained_variance']:.3f}   {m['l0']:.1f}")
    if skip:
        print(f"not compared (--ignore-bos: sae_lens zero-ablates BOS too): {', '.join(skip)}")
    print(f"largest relative difference: {rel:.3g} ({where})")
    for name in contenders:
        mem = "n/a" if peaks[name] is None else f"{peaks[name]:.1f} MiB"
        print(f"{name:9s} median {statistics.median(times[name]):.3f}s over {repeats} rounds, peak tensor memory {mem}")
    if not args.tiny:
        for key, value in (("speedup", speedup), ("floor_ratio", floor_ratio)):
            ok = value >= TARGETS[key] if key == "speedup" else value <= TARGETS[key]
            print(f"target {key} {'>=' if key == 'speedup' else '<='} {TARGETS[key]}: {'met' if ok else 'MISSED'}")
    print(f"speedup={speedup:.2f} max_rel_diff={rel:.2e} floor_ratio={floor_ratio:.2f}")
    return 0 if rel <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
