"""Benchmark saeeval against SAELens's own evals (sae_lens.evals.run_evals) in one process, on the same tokens.

Random-weight models and calibrated random SAEs (scripts/bench_models.py, `--shape`) are evaluated for CE (clean /
spliced / zero-ablated), KL (spliced / ablated), explained variance, MSE, L0, L1, cosine, L2 ratio:
  saeeval   SAEEvalModule.test_step called directly per batch (no Trainer): one clean pass, a suffix pass per
            condition (each SAE + one zero-ablation per hook), metric updates; metrics computed at the end.
  sae_lens  run_evals per SAE with a stand-in ActivationsStore that serves the same fixed batches: per batch a
            clean, a spliced and an ablated full forward, then a forward up to the hook for the sparsity metrics.
  floor     the forward work alone: one clean forward + each condition's suffix forward, no hooks, SAEs or metrics.
Runs alternate (dev: a warm-up first, 7 rounds, sae_lens in the first 2); speedup and floor_ratio are medians of
per-round ratios (the per-round ratios and the ratio of the fastest rounds are printed too). On dev and tiny,
memory is measured once per contender after the timing, under torch's profiler: the peak CPU tensor memory the
call allocates above what was live when it started (model, SAEs and tokens are not counted; the floor's cached
inputs neither). `--shape gemma-2-2b-narrow` is the 256k-vocabulary memory case: saeeval's peak tensor memory
above the weights at each of `--memory-batches`.

    python scripts/bench.py                              # dev shape: about 4 minutes on one core
    python scripts/bench.py --tiny                       # correctness only (2 layers, a few tokens)
    python scripts/bench.py --shape gpt2-small           # 12 SAEs of width 24576, one round: a few minutes
    python scripts/bench.py --shape gemma-2-2b-narrow    # memory at batch 8 and 32 (~6 GB of RAM)
    python scripts/bench.py --condition-batch 4          # also saeeval with 4 conditions per forward

Threads default to 1: on a 2-core machine shared with other jobs, 2 intra-op threads oversubscribe the cores and
every timing (the floor included) swings 10-20x from round to round. Use --threads 2 on a quiet machine. Ratios
use process CPU time by default (exact for one thread, and far steadier than wall time when other processes
compete for the cores); `--clock wall` uses wall time; both are printed.

Mask: every position is counted by default. With --ignore-bos both sides drop BOS (sae_lens ignore_tokens);
sae_lens then still zero-ablates the BOS position, so saeeval runs with compat=saelens (ablation at BOS too, CE
counted by input token) and every number is compared. The dev and tiny shapes end with ``speedup=<x> max_rel_diff=<y>
floor_ratio=<z>``; gpt2-small adds a ``gpt2-small: ...`` line with seconds per SAE, the memory case its own line.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import load_memory
import torch
from bench_models import BOS, SHAPES, FixedTokens, Setup, make_batches, make_model, make_saes
from sae_lens.evals import EvalConfig, run_evals
from sae_lens.training.activation_scaler import ActivationScaler

from saeeval.conditions import build_conditions, hooks_of
from saeeval.masks import Masks, TokenMask
from saeeval.module import SAEEvalModule
from saeeval.profiling import peak_tensor_bytes
from saeeval.splicing import Splicer

TOLERANCE = 1e-4
TARGETS = {"speedup": 3.0, "floor_ratio": 1.05}
COMPARED = ("ce_loss_without_sae", "ce_loss_with_sae", "ce_loss_with_ablation", "kl_div_with_sae",
            "kl_div_with_ablation", "explained_variance", "mse", "l0", "l1", "cossim", "l2_ratio")
"""sae_lens run_evals keys compared (its names); the derived ce/kl scores follow from them."""


# --- the three contenders -------------------------------------------------------------------------------------

def run_saeeval(
    model: Any, saes: dict, batches: list[torch.Tensor], ignore_bos: bool, condition_batch: int | None = None
) -> dict[str, dict]:
    """What `python -m saeeval` does per batch (SAEEvalModule.test_step), then each metric's compute()."""
    conditions = build_conditions(saes)
    mask = TokenMask(exclude_special=ignore_bos)
    module = SAEEvalModule(model, saes, conditions, Masks(splice=mask, score=mask), [BOS],
                           compat="saelens" if ignore_bos else "none",
                           has_answers=False, num_groups=0, condition_batch=condition_batch)
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

def timed(fn: Callable[[], Any]) -> tuple[tuple[float, float], Any]:
    """`((wall seconds, process CPU seconds), fn())`."""
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return (time.perf_counter() - t0, time.process_time() - c0), result


def peak_tensor_mib(fn: Callable[[], Any]) -> float | None:
    """Peak MiB of CPU tensor memory one call allocates above what was live when it started (None: unavailable)."""
    peak = peak_tensor_bytes(fn)
    return None if peak is None else peak / 2**20


def max_rel_diff(ours: dict, theirs: dict) -> tuple[float, str]:
    worst, where = 0.0, ""
    for sae, metrics in theirs.items():
        for key, want in metrics.items():
            got = ours[sae][key]
            rel = abs(got - want) / max(abs(want), abs(got), 1e-12)
            if rel > worst or rel != rel:
                worst, where = rel, f"{sae} {key}: saeeval {got:.9g} vs sae_lens {want:.9g}"
    return worst, where


def compare(args: argparse.Namespace, s: Setup, shape: str) -> int:
    """saeeval vs sae_lens run_evals vs the floor, alternating in one process; the summary lines."""
    model = make_model(s)
    saes = make_saes(model, s)
    batches = make_batches(s, seed=2)
    prepared = floor_inputs(model, saes, batches)
    n_cond = len(build_conditions(saes))
    tiny, dev = shape == "tiny", shape == "dev"
    repeats = args.repeats if args.repeats is not None else (7 if dev else 1)
    warmup = 1 if dev else 0
    lens_rounds = min(repeats, args.sae_lens_rounds or (2 if dev else repeats))
    print(f"{shape}: {s.n_layers} layers, d_model {s.d_model}, d_vocab {s.d_vocab}; {len(saes)} SAEs "
          f"(d_sae {s.d_sae}) -> {n_cond} saeeval conditions; {s.n_batches} batches x {s.batch} x {s.seq} tokens; "
          f"{torch.get_num_threads()} threads; {args.clock} clock")

    contenders: dict[str, Callable[[], Any]] = {
        "saeeval": lambda: run_saeeval(model, saes, batches, args.ignore_bos),
        "sae_lens": lambda: run_sae_lens(model, saes, batches, args.ignore_bos),
        "floor": lambda: run_floor(model, prepared),
    }
    batched = f"saeeval[{args.condition_batch}]"
    if args.condition_batch:
        contenders[batched] = lambda: run_saeeval(model, saes, batches, args.ignore_bos, args.condition_batch)
    times: dict[str, list[float]] = {k: [] for k in contenders}
    walls: dict[str, list[float]] = {k: [] for k in contenders}
    results: dict[str, Any] = {}
    for r in range(warmup + repeats):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        if r >= warmup + lens_rounds:  # sae_lens is slow and far from its target: fewer timed rounds
            order.remove("sae_lens")
        for name in order:
            (wall, cpu), results[name] = timed(contenders[name])
            if r >= warmup:
                times[name].append(cpu if args.clock == "cpu" else wall)
                walls[name].append(wall)
        if r >= warmup:
            print(f"round {r - warmup + 1}: " + ", ".join(f"{k} {times[k][-1]:.3f}s" for k in order), flush=True)
    peaks = {name: peak_tensor_mib(fn) for name, fn in contenders.items()} if (tiny or dev) else {}

    rel, where = max_rel_diff(results["saeeval"], results["sae_lens"])
    speedup = statistics.median(b / a for a, b in zip(times["saeeval"], times["sae_lens"]))
    per_round = [a / f for a, f in zip(times["saeeval"], times["floor"])]
    floor_ratio = statistics.median(per_round)

    print("\nper SAE (saeeval):  CE clean / spliced / ablated   KL spliced / ablated   EV   L0")
    for name, m in results["saeeval"].items():
        print(f"  {name:28s} {m['ce_loss_without_sae']:.4f} / {m['ce_loss_with_sae']:.4f} / "
              f"{m['ce_loss_with_ablation']:.4f}   {m['kl_div_with_sae']:.4f} / {m['kl_div_with_ablation']:.4f}   "
              f"{m['explained_variance']:.3f}   {m['l0']:.1f}")
    print(f"largest relative difference: {rel:.3g} ({where})")
    for name in contenders:
        mem = "" if name not in peaks else (", peak tensor memory n/a" if peaks[name] is None
                                            else f", peak tensor memory {peaks[name]:.1f} MiB")
        print(f"{name:11s} median {statistics.median(times[name]):.3f}s {args.clock} "
              f"({statistics.median(walls[name]):.3f}s wall) over {len(times[name])} rounds{mem}")
    print(f"saeeval / floor per round: {' '.join(f'{x:.3f}' for x in per_round)}; of the fastest rounds "
          f"(least disturbed by other jobs): {min(times['saeeval']) / min(times['floor']):.3f}")
    if args.condition_batch:
        ratios = [b / a for a, b in zip(times["saeeval"], times[batched])]
        print(f"{batched} / saeeval (one condition per forward): median {statistics.median(ratios):.3f}, per round "
              f"{' '.join(f'{x:.3f}' for x in ratios)}; of the fastest rounds "
              f"{min(times[batched]) / min(times['saeeval']):.3f}")
    if dev:
        for key, value in (("speedup", speedup), ("floor_ratio", floor_ratio)):
            ok = value >= TARGETS[key] if key == "speedup" else value <= TARGETS[key]
            print(f"target {key} {'>=' if key == 'speedup' else '<='} {TARGETS[key]}: {'met' if ok else 'MISSED'}")
    print(f"speedup={speedup:.2f} max_rel_diff={rel:.2e} floor_ratio={floor_ratio:.2f}")
    if not (tiny or dev):
        per_sae = {k: statistics.median(times[k]) / len(saes) for k in ("saeeval", "sae_lens", "floor")}
        print(f"{shape}: saeeval_s_per_sae={per_sae['saeeval']:.2f} sae_lens_s_per_sae={per_sae['sae_lens']:.2f} "
              f"floor_s_per_sae={per_sae['floor']:.2f} speedup={speedup:.2f} floor_ratio={floor_ratio:.2f} "
              f"max_rel_diff={rel:.2e} tokens={s.n_batches * s.batch * s.seq}")
    return 0 if rel <= TOLERANCE else 1


def memory_case(args: argparse.Namespace, s: Setup, shape: str) -> int:
    """Loading's peak resident memory over the checkpoint (a Gemma-2 Hugging Face folder of this vocabulary and
    width, in a subprocess: scripts/load_memory.py), then the peak tensor memory above the weights of one saeeval
    batch (test_step + metrics) at each batch size."""
    load = load_memory.report("gemma-2", args.load_width or s.d_model)
    print(f"loading a Gemma-2 folder ({load['checkpoint_mib']:.0f} MiB checkpoint, vocab 256000, d_model "
          f"{args.load_width or s.d_model}, 2 layers): peak RSS {load['load_peak_ratio']:.2f}x the checkpoint, "
          f"settled {load['load_settled_ratio']:.2f}x; TransformerLens parameters {load['param_ratio']:.2f}x", flush=True)
    model = make_model(s)
    saes = make_saes(model, s)
    weights = sum(p.numel() * p.element_size() for m in (model, *saes.values()) for p in m.parameters())
    print(f"{shape}: {s.n_layers} layers, d_model {s.d_model}, d_vocab {s.d_vocab}, soft-cap "
          f"{model.cfg.output_logits_soft_cap}; {len(saes)} SAEs (d_sae {s.d_sae}); weights {weights / 2**30:.2f} GiB "
          f"(model + SAEs, float32); seq {s.seq}; {torch.get_num_threads()} threads")
    peaks: dict[int, float] = {}
    for batch in args.memory_batches:
        tokens = make_batches(Setup(**{**s.__dict__, "batch": batch, "n_batches": 1}), seed=2)
        t0 = time.perf_counter()
        peak = peak_tensor_mib(lambda: run_saeeval(model, saes, tokens, args.ignore_bos))
        if peak is None:
            print("this torch's profiler gives no allocation records: memory not measured")
            return 1
        peaks[batch] = peak
        print(f"batch {batch}: peak tensor memory above the weights {peak:.0f} MiB "
              f"({time.perf_counter() - t0:.0f}s wall, under the profiler)", flush=True)
    lo, hi = min(peaks), max(peaks)
    growth = peaks[hi] / peaks[lo]
    ok = max(peaks.values()) < 2048 and growth <= 1.5
    print(f"goal: under 2048 MiB above the weights and batch {hi} within 1.5x of batch {lo}: "
          f"{'met' if ok else 'MISSED'}")
    print(f"{shape}: " + " ".join(f"peak_above_weights_mib_b{b}={p:.0f}" for b, p in peaks.items())
          + f" b{hi}_over_b{lo}={growth:.2f} weights_gib={weights / 2**30:.2f}"
          + f" load_peak_ratio={load['load_peak_ratio']:.2f} load_settled_ratio={load['load_settled_ratio']:.2f}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=list(SHAPES), default="dev", help="model/SAE shape (see bench_models.py)")
    p.add_argument("--tiny", action="store_true", help="same as --shape tiny: correctness check only")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (dev: 7 after one warm-up; others 1)")
    p.add_argument("--sae-lens-rounds", type=int, default=None,
                   help="rounds that also time sae_lens (dev: the first 2; others: all)")
    p.add_argument("--load-width", type=int, default=None,
                   help="d_model of the Gemma-2 folder whose loading the memory case measures (default: the shape's)")
    p.add_argument("--batch", type=int, default=None, help="prompts per batch")
    p.add_argument("--seq", type=int, default=None, help="tokens per prompt")
    p.add_argument("--n-batches", type=int, default=None, help="batches per evaluation")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads; 2 on a quiet 2-core machine, 1 when other jobs share the cores")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="what the ratios use: process CPU time (default; steadier when other jobs share the "
                        "cores, exact for one thread) or wall time; both are printed")
    p.add_argument("--condition-batch", type=int, default=0,
                   help="also time saeeval with this many conditions per suffix forward (run_many batching)")
    p.add_argument("--memory-batches", type=lambda v: [int(x) for x in v.split(",")], default=[8, 32],
                   help="batch sizes of the memory case (gemma-2-2b-narrow), comma-separated")
    p.add_argument("--ignore-bos", action="store_true", help="drop BOS from metrics (saeeval with compat=saelens)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = "tiny" if args.tiny else args.shape
    base = SHAPES[shape]
    s = Setup(**{**base.__dict__, **{k: getattr(args, k) for k in ("batch", "seq", "n_batches")
                                      if getattr(args, k) is not None}})
    return (memory_case if s.kind == "gemma-2-2b" else compare)(args, s, shape)


if __name__ == "__main__":
    sys.exit(main())
