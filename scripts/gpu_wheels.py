"""Wheels for a GPU machine that has torch, lightning, torchmetrics and transformers but no package registry.

Finds every distribution a real saeeval run imports here, leaves out those the GPU image already holds, and
downloads the rest as wheels for that machine's Python into `.whl/` (ignored by git), `--no-deps` each, at the
versions installed here. On the GPU machine, from the repository root:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .
    PYTHONPATH=/tmp/site python3 scripts/gpu_check.py

Run here: `python scripts/gpu_wheels.py` (needs the registry; a minute).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Distributions of the GPU machine's image (its package list, read 2026-11-17): carried only when missing there.
GPU_IMAGE = set(
    """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cycler cython einops filelock fonttools
frozenlist fsspec h11 h5py hf-xet httpcore httpx huggingface-hub humanize idna imageio iniconfig jaxtyping jinja2
joblib kiwisolver lightning lightning-utilities markdown markdown-it-py markupsafe matplotlib mdurl mpmath msgpack
multidict networkx numpy packaging pandas pathspec pillow pip pluggy portalocker propcache protobuf psutil pyarrow
pygments pyparsing python-dateutil pytorch-lightning pyyaml regex requests rich safetensors scipy sentencepiece
setuptools six sympy tokenizers torch torchmetrics tqdm transformers triton typer typing-extensions urllib3 wheel
xxhash yarl zipp pytest
""".split()
)
# Needed at run time but imported lazily (the launcher plugin and its scheduler library).
EXTRA = ("hydra-submitit-launcher", "submitit")
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)

_PROBE = """
import importlib.metadata as md, json, runpy, sys
sys.argv = ["saeeval", "+task=ioi", "limit=4", "plot=false", "force=true", "hydra.run.dir=" + sys.argv[1]]
try:
    runpy.run_module("saeeval", run_name="__main__")
except SystemExit:
    pass
pd = md.packages_distributions()
print(json.dumps(sorted({d for m in list(sys.modules) for d in pd.get(m.split(".")[0], [])})))
"""


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def needed() -> list[str]:
    """`name==version` of every distribution a saeeval run imports that the GPU image lacks."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-c", _PROBE, tmp], capture_output=True, text=True, check=True)
    dists = set(json.loads(proc.stdout.strip().splitlines()[-1])) | set(EXTRA)
    keep = sorted(
        d for d in dists if _norm(d) not in GPU_IMAGE and _norm(d) != "saeeval" and not _norm(d).startswith("nvidia-")
    )
    return [f"{d}=={md.version(d)}" for d in keep]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (3.12 there)")
    opts = parser.parse_args()
    reqs = needed()
    opts.dest.mkdir(exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        opts.python_version,
        "--implementation",
        "cp",
        "-d",
        str(opts.dest),
    ]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    for req in reqs:
        if subprocess.run([*cmd, req], stderr=subprocess.DEVNULL).returncode != 0:
            # published as an sdist only (antlr4-python3-runtime 4.9.3): build its pure-Python wheel here
            subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(opts.dest), req], check=True
            )
    size = sum(p.stat().st_size for p in opts.dest.iterdir()) / 2**20
    print(f"gpu_wheels: {len(reqs)} distributions in {opts.dest} ({size:.1f} MiB): {' '.join(reqs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
