"""GPU check: the zoo and a GPT-2-small-shaped stand-in on CUDA against the CPU float32 run, on the roads users take.

First the versions: torch, lightning, torchmetrics, transformers and huggingface-hub are printed, and a set outside
`pyproject.toml`'s ranges stops the check in one line (a GPU image brings its own; saeeval's code relies on Lightning
2.6's relaunch and placement, torchmetrics 1.9's uneven gathers, transformers 5's `dtype=`).

Then every configuration runs the real CLI (`python -m saeeval ...`) in a subprocess and its results.json is
compared, number by number, with the CPU float32 run of the same task, model and SAEs:

- float32 on the GPU: every number within 1e-3 relative (abs 1e-4): only summation order differs;
- bf16 (`dtype=bfloat16`, `+trainer.precision=bf16-true`, `bf16-mixed`, `16-mixed`): logit differences within 0.1 +
  2% of the clean one, CE within 2% relative, explained variance within 0.02 (bfloat16 keeps 8 bits of mantissa;
  logits are float32, metric states float64);
- `device=cpu trainer=gpu`: Lightning moves the weights, TransformerLens's cfg and the SAEs must follow;
- `trainer=ddp` over every visible GPU (one GPU: a one-rank DDP group, still routed by the rank's device).
- the zoo run also generates (`task.answer_mode=both`) and attributes features with the mean baseline
  (`features=attribution features.baseline=mean`: the callback's mean pass runs before the module's start hook);
  its generated-answer counts and features.json numbers are held to the float32 tolerance (a changed token would
  change a count), under bf16 the top latents must overlap the float32 ones.

The last line is the summary: `gpu_check: ... status=PASS|FAIL`. `--allow-cpu` runs the same plumbing with
`trainer=cpu` where no GPU is visible (a dry run of this script, not a GPU result; `tests/test_gpu_check.py` runs
`--allow-cpu --quick` in CI).

    python scripts/gpu_check.py                 # on a CUDA machine, about 5 minutes
    python scripts/gpu_check.py --allow-cpu --quick   # plumbing only, here
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from packaging.requirements import Requirement
from packaging.version import Version

from saeeval.results.files import flat_numbers

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tests" / "fixtures" / "gpt2-tokenizer"
F32_REL, F32_ABS = 1e-3, 1e-4
CHECKED_VERSIONS = ("torch", "lightning", "torchmetrics", "transformers", "huggingface-hub")
BF16_LD_ABS, BF16_LD_REL, BF16_CE_REL, BF16_EV_ABS = 0.1, 0.02, 0.02, 0.02


def build_gpt2_standin(folder: Path, n_layers: int, width: int) -> tuple[Path, list[Path]]:
    """A random-weight GPT-2-small-shaped HF folder (real 50257-token tokenizer) and two resid_pre SAE folders."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    model_dir = folder / "gpt2-standin"
    tok = GPT2TokenizerFast(vocab_file=str(TOKENIZER / "vocab.json"), merges_file=str(TOKENIZER / "merges.txt"))
    if len(tok) != 50257:  # some transformers versions build a 1-token tokenizer from the file keywords
        vocab = json.loads((TOKENIZER / "vocab.json").read_text())
        merges = [tuple(ln.split()) for ln in (TOKENIZER / "merges.txt").read_text().splitlines()[1:] if ln]
        tok = GPT2TokenizerFast(vocab=vocab, merges=merges)
    assert len(tok) == 50257, len(tok)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=n_layers, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024))
    hf.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    sae_dirs = []
    for layer in (n_layers * 5 // 12, n_layers * 8 // 12):  # layers 5 and 8 of GPT-2 small; 0 and 1 of 2
        gen = torch.Generator().manual_seed(layer)
        sae = StandardSAE(
            StandardSAEConfig(d_in=768, d_sae=width, metadata=SAEMetadata(hook_name=f"blocks.{layer}.hook_resid_pre"))
        )
        with torch.no_grad():
            for p in sae.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * (0.02 if p.ndim > 1 else 0.01))
        path = folder / f"sae-l{layer}"
        sae.save_model(str(path))
        sae_dirs.append(path)
    return model_dir, sae_dirs


def required_ranges() -> dict[str, Requirement]:
    """saeeval's runtime requirements by distribution name, from pyproject.toml in this checkout (the installed
    metadata where the script runs without one)."""
    pyproject = ROOT / "pyproject.toml"
    if pyproject.is_file() and sys.version_info >= (3, 11):
        import tomllib

        lines = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    else:
        lines = [r for r in metadata.requires("saeeval") or [] if "extra ==" not in r]
    reqs = (Requirement(line) for line in lines)
    return {r.name.lower().replace("_", "-"): r for r in reqs}


def check_versions() -> tuple[str, list[str]]:
    """`name=version ...` of CHECKED_VERSIONS, and one line per version outside pyproject.toml's range."""
    ranges, shown, bad = required_ranges(), [], []
    for name in CHECKED_VERSIONS:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            bad.append(f"{name} is not installed: pip install '{ranges[name]}'")
            continue
        shown.append(f"{name}={version}")
        spec = ranges[name].specifier
        if not spec.contains(Version(version), prereleases=True):
            bad.append(f"{name} {version} is outside pyproject.toml's range {spec}: pip install '{name}{spec}'")
    return " ".join(shown), bad


def top_overlap(ref: dict, got: dict, k: int = 5) -> int:
    """Fewest of the float32 top-k latents of any SAE found among the other run's top 2k."""
    worst = k
    for name, sae in ref["saes"].items():
        mine = {row["feature"] for row in sae["top"][:k]}
        theirs = {row["feature"] for row in got["saes"][name]["top"][: 2 * k]}
        worst = min(worst, len(mine & theirs))
    return worst


def run(args: list[str], out: Path) -> tuple[dict[str, Any], float]:
    """One CLI run into `out`; its results.json and wall seconds."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "saeeval", *args, f"hydra.run.dir={out}", "plot=false"],
        capture_output=True,
        text=True,
        cwd=out.parent,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    doc = json.loads((out / "results.json").read_text())
    if (out / "features.json").is_file():
        doc["features"] = json.loads((out / "features.json").read_text())
    return doc, seconds


def f32_violations(ref: dict, got: dict) -> tuple[float, list[str]]:
    """Largest relative difference over every number (features.json's too), and the keys beyond the float32
    tolerance."""
    a, b = flat_numbers(ref["conditions"]), flat_numbers(got["conditions"])
    if "features" in ref:
        a.update({f"features{k}": v for k, v in flat_numbers(ref["features"]).items() if "config_hash" not in k})
        b.update({f"features{k}": v for k, v in flat_numbers(got.get("features", {})).items()})
    worst, bad = 0.0, []
    for key, value in a.items():
        other = b.get(key, math.nan)
        rel = abs(other - value) / max(abs(value), 1e-12)
        worst = max(worst, rel if rel == rel else math.inf)
        if not math.isclose(other, value, rel_tol=F32_REL, abs_tol=F32_ABS):
            bad.append(key)
    return worst, bad


def bf16_violations(ref: dict, got: dict) -> tuple[float, list[str]]:
    """Largest logit-diff difference, and every stated bf16 bound that fails."""
    conds, bad, worst = ref["conditions"], [], 0.0
    clean_ld = abs(conds["clean"].get("task", {}).get("logit_diff") or 0.0)
    for name, cond in conds.items():
        other = got["conditions"][name]
        if "logit_diff" in cond.get("task", {}):
            diff = abs(other["task"]["logit_diff"] - cond["task"]["logit_diff"])
            worst = max(worst, diff)
            if diff > BF16_LD_ABS + BF16_LD_REL * clean_ld:
                bad.append(f"{name}/logit_diff")
        ce, ce_other = cond["lm"].get("ce_loss"), other["lm"].get("ce_loss")
        if ce is not None and not math.isclose(ce_other, ce, rel_tol=BF16_CE_REL):
            bad.append(f"{name}/ce_loss")
        for hook, recon in cond.get("reconstruction", {}).items():
            if abs(other["reconstruction"][hook]["explained_variance"] - recon["explained_variance"]) > BF16_EV_ABS:
                bad.append(f"{name}/{hook}/explained_variance")
    if "features" in ref and ("features" not in got or top_overlap(ref["features"], got["features"]) < 3):
        bad.append("features/top latents")
    return worst, bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--allow-cpu", action="store_true", help="dry run with trainer=cpu when no GPU is visible")
    parser.add_argument("--quick", action="store_true", help="fewer examples, 2 layers, narrow SAEs (plumbing)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders here")
    opts = parser.parse_args()
    versions, wrong = check_versions()
    print(f"gpu_check: versions {versions}")
    if wrong:
        print(f"gpu_check: {wrong[0]}", file=sys.stderr)
        return 2
    n_gpus = torch.cuda.device_count()
    if n_gpus == 0 and not opts.allow_cpu:
        print("gpu_check: no CUDA device is visible; nothing was run (--allow-cpu for a dry run)", file=sys.stderr)
        return 2
    gpu = ["trainer=gpu"] if n_gpus else ["trainer=cpu"]
    ddp = ["trainer=ddp", f"trainer.devices={n_gpus}"] if n_gpus else ["trainer=ddp_cpu"]
    limit = 32 if opts.quick else 256
    work = opts.keep or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir, sae_dirs = build_gpt2_standin(work, 2 if opts.quick else 12, 1024 if opts.quick else 24576)
    gpt2 = ["model=hf_folder", f"model.name={model_dir}", "saes=folder", f"saes.paths=[{','.join(map(str, sae_dirs))}]"]
    # the zoo also generates (answer_mode=both): KV-cache generation under splices, several conditions per forward
    setups = {
        "zoo": [
            "+task=toxicity",
            f"limit={limit}",
            "task.answer_mode=both",
            "task.max_new_tokens=4",
            "features=attribution",
            "features.baseline=mean",
        ],
        "gpt2": ["+task=ioi", f"limit={limit}", "batch_size=16", *gpt2],
    }
    variants = {
        "f32": (gpu, "f32"),
        "bf16": ([*gpu, "dtype=bfloat16"], "bf16"),
        "bf16true": ([*gpu, "+trainer.precision=bf16-true"], "bf16"),
        "bf16mixed": ([*gpu, "+trainer.precision=bf16-mixed"], "bf16"),
        "fp16mixed": ([*gpu, "+trainer.precision=16-mixed"], "bf16"),  # bf16 autocast on the CPU (Lightning)
        "placed": ([*gpu, "device=cpu"], "f32"),
        "ddp": (ddp, "f32"),
    }
    env_note = torch.cuda.get_device_name(0) if n_gpus else "cpu (dry run)"
    summary, failed = [], []
    for setup, base in setups.items():
        ref, ref_s = run([*base, "trainer=cpu", "device=cpu"], work / f"{setup}-cpu")
        summary.append(f"{setup}_cpu_s={ref_s:.1f}")
        for variant, (extra, kind) in variants.items():
            try:
                got, secs = run([*base, *extra], work / f"{setup}-{variant}")
            except RuntimeError as err:  # one configuration failing must not hide the others' results
                failed.append(f"{setup}-{variant}: {str(err).strip().splitlines()[-1]}")
                continue
            worst, bad = (f32_violations if kind == "f32" else bf16_violations)(ref, got)
            measure = "maxrel" if kind == "f32" else "ld_maxabs"
            summary.append(f"{setup}_{variant}_s={secs:.1f} {setup}_{variant}_{measure}={worst:.2e}")
            if bad:
                failed.append(f"{setup}-{variant}: {', '.join(bad[:5])}")
    for line in failed:
        print(f"gpu_check: failed: {line}", file=sys.stderr)
    print(
        f"gpu_check: device={env_note!r} n_gpus={n_gpus} torch={torch.__version__} "
        + " ".join(summary)
        + f" status={'FAIL' if failed else 'PASS'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
