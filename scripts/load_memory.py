"""Peak and settled resident memory of loading a Hugging Face model folder with saeeval, over the checkpoint size.

Why a subprocess: resident memory (VmHWM, VmRSS in /proc/self/status) is per process, and allocator caches from
earlier work would blur it. The child imports saeeval first, resets the high-water mark (`/proc/self/clear_refs`),
loads the folder with `saeeval.loading.models.load_model` (`model=hf_folder`), and reports peak and settled RSS above
what it held before loading. The stand-ins (tests/standins.py) are random-weight folders written with
save_pretrained: Gemma-2 (256,000-token vocabulary, tied embeddings; 2 layers), GPT-2 (50257, tied; 2 layers) and
Gemma-2-2b at its full depth in bfloat16 (5.2 GB on disk; about 2 minutes here).
The ratios: `load_peak_ratio` / `load_settled_ratio` (RSS), `load_peak_anon_ratio` (anonymous memory alone,
sampled), `settled_file_ratio` (file pages still resident after loading: the checkpoint's, were any tensor to
still view its mapping), `param_ratio` / `storage_ratio` (the parameters' bytes and their distinct storages).

    python scripts/load_memory.py                     # the two narrow stand-ins, one line each
    python scripts/load_memory.py --shape gemma-2 --width 768
    python scripts/load_memory.py --shape gemma-2-2b  # the real Gemma-2-2b shape, bfloat16
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
CHECKPOINT_SUFFIXES = (".safetensors",)


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def child(folder: str, dtype: str) -> None:
    """Load `folder` and print one JSON line: bytes held before, at the peak and after loading."""
    import torch

    from saeeval.loading.models import load_model

    torch.set_num_threads(1)
    gc.collect()
    before, before_anon, before_file = status_kib("VmRSS"), status_kib("RssAnon"), status_kib("RssFile")
    anon_peak = [before_anon]
    done = threading.Event()

    def sample() -> None:  # the kernel keeps no high-water mark of anonymous memory alone
        while not done.wait(0.002):
            anon_peak[0] = max(anon_peak[0], status_kib("RssAnon"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    model = load_model(name=folder, source="folder", device="cpu", dtype=dtype)
    peak = status_kib("VmHWM")
    done.set()
    sampler.join()
    gc.collect()
    settled = status_kib("VmRSS")
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()}
    print(
        json.dumps(
            {
                "before": before * 1024,
                "peak": peak * 1024,
                "settled": settled * 1024,
                "anon_before": before_anon * 1024,
                "anon_peak": anon_peak[0] * 1024,
                "file_before": before_file * 1024,
                "file_settled": status_kib("RssFile") * 1024,
                "param_bytes": params,
                "storage_bytes": sum(storages.values()),
            }
        )
    )


def measure(folder: Path, dtype: str = "float32") -> dict[str, float]:
    """Peak and settled RSS above the pre-load RSS, as multiples of the checkpoint's size on disk."""
    ckpt = sum(f.stat().st_size for f in folder.iterdir() if f.name.endswith(CHECKPOINT_SUFFIXES))
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(folder), "--dtype", dtype], capture_output=True, text=True, check=True
    )
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "checkpoint_mib": ckpt / 2**20,
        "load_peak_ratio": (rec["peak"] - rec["before"]) / ckpt,
        "load_settled_ratio": (rec["settled"] - rec["before"]) / ckpt,
        "load_peak_anon_ratio": (rec["anon_peak"] - rec["anon_before"]) / ckpt,
        "settled_file_ratio": (rec["file_settled"] - rec["file_before"]) / ckpt,
        "param_ratio": rec["param_bytes"] / ckpt,
        "storage_ratio": rec["storage_bytes"] / ckpt,
    }


def write_standin(shape: str, folder: Path, width: int) -> Path:
    sys.path.insert(0, str(TESTS))
    import standins

    if shape == "gemma-2":
        return standins.write_gemma2_folder(folder, ["the cat sat"], width=width)
    if shape == "gemma-2-2b":
        return standins.write_gemma2_2b_folder(folder)
    return standins.write_gpt2_folder(folder)


def report(shape: str, width: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="saeeval-load-") as tmp:
        folder = write_standin(shape, Path(tmp) / shape, width)
        gc.collect()
        return measure(folder, "bfloat16" if shape == "gemma-2-2b" else "float32")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=("gemma-2", "gpt2", "gemma-2-2b", "both"), default="both")
    p.add_argument("--width", type=int, default=768, help="Gemma-2 stand-in d_model (vocabulary stays 256,000)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.dtype)
        return 0
    for shape in ("gemma-2", "gpt2") if args.shape == "both" else (args.shape,):
        r = report(shape, args.width)
        print(
            f"load {shape}: checkpoint {r['checkpoint_mib']:.0f} MiB, "
            + " ".join(f"{k}={v:.2f}" for k, v in r.items() if k != "checkpoint_mib"),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
