"""Benchmark saeeval against SAELens's own evals (sae_lens.evals.run_evals) in one process, on the same tokens.

Random-weight models and calibrated random SAEs (scripts/bench_models.py, `--shape`) are evaluated for CE (clean /
spliced / zero-ablated), KL (spliced / ablated), explained variance, MSE, L0, L1, cosine, L2 ratio:
  saeeval   SAEEvalModule.test_step called directly per batch (no Trainer): one clean pass, a suffix pass per
            condition (each SAE + one zero-ablation per hook), metric updates; metrics computed at the end.
  sae_lens  run_evals per SAE with a stand-in ActivationsStore that serves the same fixed batches: per batch a
            clean, a spliced and an ablated full forward, then a forward up to the hook for the sparsity metrics.
  floor     the work any evaluator of these conditions must do, and nothing more: one clean forward, then for each
            condition its splice (the SAE's decode(encode(x)) at every position, or zeros) on a plain hook point
            and its suffix forward from the same layer saeeval starts it at, to TransformerLens's logits; no
            metrics (scripts/bench_floor.py). `splices` times the splices alone, so the SAEs' share of the floor
            is printed, and saeeval over the floor's forwards alone (floor minus splices) beside floor_ratio.
  saebench  (--saebench-python) SAEBench's core eval in its own environment (scripts/bench_saebench.py), once.
Contenders alternate batch by batch inside each round (a slow drift of a shared machine then hits all of them
alike; sae_lens's run_evals runs whole after the batches). Dev: a warm-up round first, 11 rounds, sae_lens in the
first 2; speedup and floor_ratio are medians of per-round ratios (the per-round ratios and the ratio of the
fastest rounds are printed too). On dev and tiny,
memory is measured once per contender after the timing, under torch's profiler: the peak CPU tensor memory the
call allocates above what was live when it started (model, SAEs and tokens are not counted; the floor's cached
inputs neither). `--shape gemma-2-2b-narrow` is the 256k-vocabulary memory case: saeeval's peak tensor memory
above the weights at each of `--memory-batches`.

    python scripts/bench.py                              # dev shape: about 6 minutes on one core
    python scripts/bench.py --tiny                       # correctness only (2 layers, a few tokens)
    python scripts/bench.py --shape gpt2-small           # 12 SAEs of width 24576, one round: a few minutes
    python scripts/bench.py --shape gemma-2-2b-narrow    # memory at batch 8 and 32 (max RSS 8.4 GB measured)
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
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import load_memory
import torch
from bench_floor import floor_inputs, floor_step, splices_alone
from bench_models import BOS, COMPARED, SHAPES, FixedTokens, Setup, make_batches, make_model, make_saes
from sae_lens.evals import EvalConfig, run_evals
from sae_lens.training.activation_scaler import ActivationScaler

from saeeval.engine.conditions import build_conditions
from saeeval.engine.masks import Masks, TokenMask
from saeeval.engine.module import SAEEvalModule
from saeeval.profiling import peak_tensor_bytes

TOLERANCE = 1e-4
TARGETS = {"speedup": 3.0, "floor_ratio": 1.05}


# --- the three contenders -------------------------------------------------------------------------------------


class SaeevalRun:
    """What `python -m saeeval` does per batch (SAEEvalModule.test_step, no Trainer), then each metric's compute():
    built, stepped batch by batch (so the timing can alternate with the floor's per batch) and finished."""

    def __init__(
        self, model: Any, saes: dict, ignore_bos: bool, condition_batch: int | None = None, compat: str | None = None
    ) -> None:
        self.conditions = build_conditions(saes)
        mask = TokenMask(exclude_special=ignore_bos)
        self.module = SAEEvalModule(
            model,
            saes,
            self.conditions,
            Masks(splice=mask, score=mask),
            [BOS],
            compat=compat or ("saelens" if ignore_bos else "none"),
            has_answers=False,
            num_groups=0,
            condition_batch=condition_batch,
        )

    def step(self, i: int, tokens: torch.Tensor) -> None:
        self.module.test_step({"tokens": tokens, "attention_mask": torch.ones_like(tokens)}, i)

    def finish(self) -> dict[str, dict]:
        """sae_lens's metric names per SAE condition."""
        conditions, metrics = self.conditions, self.module.metrics
        clean, by_name = metrics[0], dict(zip([c.name for c in conditions], metrics[1:], strict=True))
        out = {}
        for cond in conditions:
            if cond.ablation is not None:
                continue
            m, base = by_name[cond.name], by_name[cond.baseline]
            recon = {k: float(v) for k, v in m.recon[0].compute().items()}
            ce, ce_clean, ce_abl = float(m.ce.compute()), float(clean.ce.compute()), float(base.ce.compute())
            kl, kl_abl = float(m.kl.compute()), float(base.kl.compute())
            out[cond.name] = {
                "ce_loss_without_sae": ce_clean,
                "ce_loss_with_sae": ce,
                "ce_loss_with_ablation": ce_abl,
                "kl_div_with_sae": kl,
                "kl_div_with_ablation": kl_abl,
                "explained_variance": recon["explained_variance"],
                "mse": recon["mse"],
                "l0": recon["l0"],
                "l1": recon["l1"],
                "cossim": recon["cosine_similarity"],
                "l2_ratio": recon["l2_ratio"],
            }
            if m.batchwise is not None:  # compat=saelens / saebench: those tools' batch-dependent definitions
                out[cond.name].update({k: float(v) for k, v in m.batchwise[0].compute().items()})
        return out


def run_saeeval(
    model: Any,
    saes: dict,
    batches: list[torch.Tensor],
    ignore_bos: bool,
    condition_batch: int | None = None,
    compat: str | None = None,
) -> dict[str, dict]:
    run = SaeevalRun(model, saes, ignore_bos, condition_batch, compat)
    for i, tokens in enumerate(batches):
        run.step(i, tokens)
    return run.finish()


def run_sae_lens(model: Any, saes: dict, batches: list[torch.Tensor], ignore_bos: bool) -> dict[str, dict]:
    """sae_lens 6.54's run_evals for each SAE on the same batches, every metric saeeval reports switched on."""
    config = EvalConfig(
        batch_size_prompts=batches[0].shape[0],
        n_eval_reconstruction_batches=len(batches),
        compute_kl=True,
        compute_ce_loss=True,
        n_eval_sparsity_variance_batches=len(batches),
        compute_l2_norms=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
        compute_featurewise_density_statistics=True,
        library_version="bench",
        git_hash="bench",
    )
    out = {}
    for name, sae in saes.items():
        metrics, _ = run_evals(
            sae,
            FixedTokens(batches),
            model,
            ActivationScaler(),
            config,
            exclude_special_tokens=[BOS] if ignore_bos else False,
        )
        flat = {k: v for group in metrics.values() for k, v in group.items()}
        out[name] = {k: float(flat[k]) for k in COMPARED}
    return out


def run_saebench(python: str, s: Setup, threads: int) -> dict[str, Any]:
    """SAEBench's core eval on the same seeded model, SAEs and tokens, with the Python of its own environment
    (scripts/bench_saebench.py): `{"metrics": {sae: {...}}, "cpu": s, "wall": s}` of the whole evaluation."""
    script = Path(__file__).with_name("bench_saebench.py")
    cmd = [python, str(script), "--setup", json.dumps(s.__dict__), "--threads", str(threads)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as err:
        raise SystemExit(
            f"bench: cannot run --saebench-python {python} ({err}): give the python of an "
            "environment with sae-bench installed (see scripts/bench_saebench.py)"
        ) from err
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(
            f"bench: the SAEBench run failed ({last}): install torch==2.13.0 and sae-bench==0.6.0 in "
            f"the environment of {python} (see scripts/bench_saebench.py)"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- measuring ------------------------------------------------------------------------------------------------


@dataclass
class Contender:
    """One evaluation as `begin()` → state, `step(state, i)` per batch, `end(state)` → result, so contenders can
    alternate batch by batch (a slow drift of the machine then hits all of them alike, not one whole run)."""

    begin: Callable[[], Any] = lambda: None
    step: Callable[[Any, int], None] = lambda state, i: None
    end: Callable[[Any], Any] = lambda state: None

    def whole(self, n_batches: int) -> Any:
        state = self.begin()
        for i in range(n_batches):
            self.step(state, i)
        return self.end(state)


def timed(fn: Callable[[], Any]) -> tuple[tuple[float, float], Any]:
    """`((wall seconds, process CPU seconds), fn())`."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return (time.perf_counter() - t0, time.process_time() - c0), result


def alternate(contenders: dict[str, Contender], n_batches: int) -> tuple[dict[str, tuple[float, float]], dict]:
    """One round: every contender begun, then batch by batch each one's step in turn, then each one ended (in the
    dict's order); `({name: (wall, cpu) seconds summed}, {name: result})`."""
    spent = {name: [0.0, 0.0] for name in contenders}
    states, results = {}, {}

    def run(name: str, fn: Callable[[], Any]) -> Any:
        (wall, cpu), out = timed(fn)
        spent[name][0] += wall
        spent[name][1] += cpu
        return out

    gc.collect()
    for name, c in contenders.items():
        states[name] = run(name, c.begin)
    for i in range(n_batches):
        for name, c in contenders.items():
            run(name, lambda c=c, name=name, i=i: c.step(states[name], i))
    for name, c in contenders.items():
        results[name] = run(name, lambda c=c, name=name: c.end(states[name]))
    return {k: (v[0], v[1]) for k, v in spent.items()}, results


def peak_tensor_mib(fn: Callable[[], Any]) -> float | None:
    """Peak MiB of CPU tensor memory one call allocates above what was live when it started (None: unavailable)."""
    peak = peak_tensor_bytes(fn)
    return None if peak is None else peak / 2**20


def max_rel_diff(ours: dict, theirs: dict, them: str = "sae_lens") -> tuple[float, str]:
    worst, where = 0.0, ""
    for sae, metrics in theirs.items():
        for key, want in metrics.items():
            got = ours[sae][key]
            rel = abs(got - want) / max(abs(want), abs(got), 1e-12)
            if rel > worst or rel != rel:
                worst, where = rel, f"{sae} {key}: saeeval {got:.9g} vs {them} {want:.9g}"
    return worst, where


def compare(args: argparse.Namespace, s: Setup, shape: str) -> int:
    """saeeval vs sae_lens run_evals vs the floor, alternating in one process; the summary lines."""
    model = make_model(s)
    saes = make_saes(model, s)
    batches = make_batches(s, seed=2)
    prepared = floor_inputs(model, saes, batches)
    n_cond = len(build_conditions(saes))
    tiny, dev = shape == "tiny", shape == "dev"
    repeats = args.repeats if args.repeats is not None else (11 if dev else 1)
    warmup = 1 if dev else 0
    lens_rounds = min(repeats, args.sae_lens_rounds or (2 if dev else repeats))
    print(
        f"{shape}: {s.n_layers} layers, d_model {s.d_model}, d_vocab {s.d_vocab}; {len(saes)} SAEs "
        f"(d_sae {s.d_sae}) -> {n_cond} saeeval conditions; {s.n_batches} batches x {s.batch} x {s.seq} tokens; "
        f"{torch.get_num_threads()} threads; {args.clock} clock"
    )

    def saeeval(condition_batch: int | None = None) -> Contender:
        return Contender(
            lambda: SaeevalRun(model, saes, args.ignore_bos, condition_batch),
            lambda run, i: run.step(i, batches[i]),
            lambda run: run.finish(),
        )

    contenders: dict[str, Contender] = {
        "saeeval": saeeval(),
        "sae_lens": Contender(end=lambda _: run_sae_lens(model, saes, batches, args.ignore_bos)),
        "floor": Contender(step=lambda _, i: floor_step(model, prepared[i])),
        "splices": Contender(step=lambda _, i: splices_alone(prepared[i : i + 1])),
    }
    batched = f"saeeval[{args.condition_batch}]"
    if args.condition_batch:
        contenders[batched] = saeeval(args.condition_batch)
    times: dict[str, list[float]] = {k: [] for k in contenders}
    walls: dict[str, list[float]] = {k: [] for k in contenders}
    results: dict[str, Any] = {}
    for r in range(warmup + repeats):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        if r >= warmup + lens_rounds:  # sae_lens is slow and far from its target: fewer timed rounds
            order.remove("sae_lens")
        spent, got = alternate({k: contenders[k] for k in order}, len(batches))
        results.update(got)
        if r >= warmup:
            for name in order:
                wall, cpu = spent[name]
                times[name].append(cpu if args.clock == "cpu" else wall)
                walls[name].append(wall)
            print(f"round {r - warmup + 1}: " + ", ".join(f"{k} {times[k][-1]:.3f}s" for k in order), flush=True)
    saebench = run_saebench(args.saebench_python, s, args.threads) if args.saebench_python else None
    as_saebench = run_saeeval(model, saes, batches, False, compat="saebench") if saebench is not None else None
    peaks = (
        {name: peak_tensor_mib(lambda c=c: c.whole(len(batches))) for name, c in contenders.items()}
        if (tiny or dev)
        else {}
    )

    rel, where = max_rel_diff(results["saeeval"], results["sae_lens"])
    # sae_lens runs only the first lens_rounds rounds: pair those with saeeval's rounds of the same number
    speedup = statistics.median(b / a for a, b in zip(times["saeeval"], times["sae_lens"], strict=False))
    per_round = [a / f for a, f in zip(times["saeeval"], times["floor"], strict=True)]
    floor_ratio = statistics.median(per_round)

    print("\nper SAE (saeeval):  CE clean / spliced / ablated   KL spliced / ablated   EV   L0")
    for name, m in results["saeeval"].items():
        print(
            f"  {name:28s} {m['ce_loss_without_sae']:.4f} / {m['ce_loss_with_sae']:.4f} / "
            f"{m['ce_loss_with_ablation']:.4f}   {m['kl_div_with_sae']:.4f} / {m['kl_div_with_ablation']:.4f}   "
            f"{m['explained_variance']:.3f}   {m['l0']:.1f}"
        )
    print(f"largest relative difference: {rel:.3g} ({where})")
    for name in contenders:
        mem = (
            ""
            if name not in peaks
            else (", peak tensor memory n/a" if peaks[name] is None else f", peak tensor memory {peaks[name]:.1f} MiB")
        )
        print(
            f"{name:11s} median {statistics.median(times[name]):.3f}s {args.clock} "
            f"({statistics.median(walls[name]):.3f}s wall) over {len(times[name])} rounds{mem}"
        )
    if saebench is not None:
        sb_rel, sb_where = max_rel_diff(results["saeeval"], saebench["metrics"], "SAEBench")
        sb_speedup = saebench[args.clock] / statistics.median(times["saeeval"])
        print(
            f"saebench    {saebench['cpu']:.3f}s cpu ({saebench['wall']:.3f}s wall), one run in its own process "
            f"after the rounds: saeeval {sb_speedup:.2f}x faster\n"
            f"  largest relative difference {sb_rel:.3g}\n  ({sb_where})"
        )
        own_rel, own_where = max_rel_diff(as_saebench, saebench["own"], "SAEBench")
        print(
            "saeeval compat=saebench against SAEBench's own batch-dependent definitions (mse, explained variance\n"
            f"  + legacy, relative bias, l1): largest relative difference {own_rel:.3g}\n  ({own_where})"
        )
    print(
        f"saeeval / floor per round: {' '.join(f'{x:.3f}' for x in per_round)}; of the fastest rounds "
        f"(least disturbed by other jobs): {min(times['saeeval']) / min(times['floor']):.3f}"
    )
    bare = statistics.median(
        a / (f - sp) for a, f, sp in zip(times["saeeval"], times["floor"], times["splices"], strict=True)
    )
    share = statistics.median(sp / f for f, sp in zip(times["floor"], times["splices"], strict=True))
    print(
        f"the splices (SAE encode/decode, zeros) are {share:.1%} of the floor;\n"
        f"  saeeval over the floor's forwards alone (floor minus splices): {bare:.3f}"
    )
    if args.condition_batch:
        ratios = [b / a for a, b in zip(times["saeeval"], times[batched], strict=True)]
        print(
            f"{batched} / saeeval (one condition per forward): median {statistics.median(ratios):.3f}, per round "
            f"{' '.join(f'{x:.3f}' for x in ratios)}; of the fastest rounds "
            f"{min(times[batched]) / min(times['saeeval']):.3f}"
        )
    if dev:
        for key, value in (("speedup", speedup), ("floor_ratio", floor_ratio)):
            ok = value >= TARGETS[key] if key == "speedup" else value <= TARGETS[key]
            print(f"target {key} {'>=' if key == 'speedup' else '<='} {TARGETS[key]}: {'met' if ok else 'MISSED'}")
    print(f"speedup={speedup:.2f} max_rel_diff={rel:.2e} floor_ratio={floor_ratio:.2f}")
    if not (tiny or dev):
        per_sae = {k: statistics.median(times[k]) / len(saes) for k in ("saeeval", "sae_lens", "floor")}
        print(
            f"{shape}: saeeval_s_per_sae={per_sae['saeeval']:.2f} sae_lens_s_per_sae={per_sae['sae_lens']:.2f} "
            f"floor_s_per_sae={per_sae['floor']:.2f} speedup={speedup:.2f} floor_ratio={floor_ratio:.2f} "
            f"max_rel_diff={rel:.2e} tokens={s.n_batches * s.batch * s.seq}"
            + (
                ""
                if saebench is None
                else f" saebench_s_per_sae={saebench[args.clock] / len(saes):.2f} "
                f"speedup_over_saebench={sb_speedup:.2f} saebench_max_rel_diff={sb_rel:.2e}"
            )
        )
    agree = rel <= TOLERANCE and (saebench is None or max(sb_rel, own_rel) <= TOLERANCE)
    return 0 if agree else 1


def reset_peak_rss() -> int | None:
    """Reset the kernel's high-water mark of resident memory to the current RSS; that RSS in KiB (None: no /proc)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return load_memory.status_kib("VmRSS")
    except OSError:
        return None


def memory_case(args: argparse.Namespace, s: Setup, shape: str) -> int:
    """Loading's peak resident memory over the checkpoint (a Gemma-2 Hugging Face folder, `--load-shape`, in a
    subprocess: scripts/load_memory.py), then the peak tensor memory above the weights of one saeeval
    batch (test_step + metrics) at each batch size."""
    load = load_memory.report(args.load_shape, args.load_width or s.d_model)
    what = (
        "Gemma-2-2b's shape at full depth, bfloat16"
        if args.load_shape == "gemma-2-2b"
        else f"vocab 256000, d_model {args.load_width or s.d_model}, 2 layers"
    )
    print(
        f"loading a Gemma-2 folder ({what}; {load['checkpoint_mib']:.0f} MiB checkpoint): peak RSS "
        f"{load['load_peak_ratio']:.2f}x the checkpoint, settled {load['load_settled_ratio']:.2f}x; TransformerLens "
        f"parameters {load['param_ratio']:.2f}x (its W_E is a scaled copy of the embedding beside W_U)",
        flush=True,
    )
    model = make_model(s)
    saes = make_saes(model, s)
    weights = sum(p.numel() * p.element_size() for m in (model, *saes.values()) for p in m.parameters())
    print(
        f"{shape}: {s.n_layers} layers, d_model {s.d_model}, d_vocab {s.d_vocab}, soft-cap "
        f"{model.cfg.output_logits_soft_cap}; {len(saes)} SAEs (d_sae {s.d_sae}); weights {weights / 2**30:.2f} GiB "
        f"(model + SAEs, float32); seq {s.seq}; {torch.get_num_threads()} threads"
    )
    peaks: dict[int, float] = {}
    for batch in args.memory_batches:
        tokens = make_batches(Setup(**{**s.__dict__, "batch": batch, "n_batches": 1}), seed=2)
        t0 = time.perf_counter()
        gc.collect()
        rss_before = reset_peak_rss()
        peak = peak_tensor_mib(lambda tokens=tokens: run_saeeval(model, saes, tokens, args.ignore_bos))
        if peak is None:
            print("this torch's profiler gives no allocation records: memory not measured")
            return 1
        peaks[batch] = peak
        rss = (
            ""
            if rss_before is None
            else (f"; peak RSS above the RSS before {(load_memory.status_kib('VmHWM') - rss_before) / 1024:.0f} MiB")
        )
        print(
            f"batch {batch}: peak tensor memory above the weights {peak:.0f} MiB{rss} "
            f"({time.perf_counter() - t0:.0f}s wall, under the profiler)",
            flush=True,
        )
    lo, hi = min(peaks), max(peaks)
    growth = peaks[hi] / peaks[lo]
    ok = max(peaks.values()) < 2048 and growth <= 1.5
    print(
        f"goal: under 2048 MiB above the weights and batch {hi} within 1.5x of batch {lo}: {'met' if ok else 'MISSED'}"
    )
    print(
        f"{shape}: "
        + " ".join(f"peak_above_weights_mib_b{b}={p:.0f}" for b, p in peaks.items())
        + f" b{hi}_over_b{lo}={growth:.2f} weights_gib={weights / 2**30:.2f}"
        + f" load_peak_ratio={load['load_peak_ratio']:.2f} load_settled_ratio={load['load_settled_ratio']:.2f}"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=list(SHAPES), default="dev", help="model/SAE shape (see bench_models.py)")
    p.add_argument("--tiny", action="store_true", help="same as --shape tiny: correctness check only")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (dev: 11 after one warm-up; others 1)")
    p.add_argument(
        "--sae-lens-rounds",
        type=int,
        default=None,
        help="rounds that also time sae_lens (dev: the first 2; others: all)",
    )
    p.add_argument(
        "--load-shape",
        choices=("gemma-2-2b", "gemma-2"),
        default="gemma-2-2b",
        help="the Gemma-2 folder whose loading the memory case measures: Gemma-2-2b at full depth in "
        "bfloat16 (5 GB on disk, ~2 minutes) or a 2-layer one of --load-width",
    )
    p.add_argument(
        "--load-width",
        type=int,
        default=None,
        help="d_model of the 2-layer Gemma-2 folder (--load-shape gemma-2; default: the shape's)",
    )
    p.add_argument("--batch", type=int, default=None, help="prompts per batch")
    p.add_argument("--seq", type=int, default=None, help="tokens per prompt")
    p.add_argument("--n-batches", type=int, default=None, help="batches per evaluation")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads; 2 on a quiet 2-core machine, 1 when other jobs share the cores",
    )
    p.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="what the ratios use: process CPU time (default; steadier when other jobs share the "
        "cores, exact for one thread) or wall time; both are printed",
    )
    p.add_argument(
        "--condition-batch",
        type=int,
        default=0,
        help="also time saeeval with this many conditions per suffix forward (run_many batching)",
    )
    p.add_argument(
        "--memory-batches",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[8, 32],
        help="batch sizes of the memory case (gemma-2-2b-narrow), comma-separated",
    )
    p.add_argument("--ignore-bos", action="store_true", help="drop BOS from metrics (saeeval with compat=saelens)")
    p.add_argument(
        "--saebench-python",
        default=None,
        help="python of an environment with sae-bench: also run SAEBench's core eval (bench_saebench.py)",
    )
    args = p.parse_args(argv)
    if args.saebench_python and args.ignore_bos:
        p.error("--saebench-python counts every position: drop --ignore-bos")
    if args.saebench_python and shutil.which(args.saebench_python) is None:
        p.error(
            f"--saebench-python {args.saebench_python} is not an executable: give the python of an environment "
            "with sae-bench installed (see scripts/bench_saebench.py)"
        )
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = "tiny" if args.tiny else args.shape
    base = SHAPES[shape]
    s = Setup(
        **{
            **base.__dict__,
            **{k: getattr(args, k) for k in ("batch", "seq", "n_batches") if getattr(args, k) is not None},
        }
    )
    return (memory_case if s.kind == "gemma-2-2b" else compare)(args, s, shape)


if __name__ == "__main__":
    sys.exit(main())
