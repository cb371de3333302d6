"""Feature attribution under `trainer=ddp_cpu` (2 processes over gloo) writes the single-process features.json.

41 examples in batches of 8 split unevenly over the ranks (21 + 20); the mean baseline adds pass 0, whose latent
means must be summed over both ranks before anyone attributes, and pass 2 (the ablations of the top latents)
needs both ranks to agree on the top latents after the attribution sums are synced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from run_files import differences

pytestmark = pytest.mark.slow

N = 41
ARGS = [
    "+task=toxicity",
    f"limit={N}",
    "batch_size=8",
    "features=attribution",
    "features.baseline=mean",
    "features.top_k=5",
    "plot=false",
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {}
    for kind in ("cpu", "ddp_cpu"):
        out = tmp_path_factory.mktemp(kind) / "run"
        procs[kind] = (
            subprocess.Popen(
                [sys.executable, "-m", "saeeval", *ARGS, f"trainer={kind}", f"hydra.run.dir={out}"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
            out,
        )
    docs = {}
    for kind, (proc, out) in procs.items():
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{kind}:\n{stderr[-3000:]}"
        docs[kind] = json.loads((Path(out) / "features.json").read_text())
    return docs


def test_ddp_features_equal_single_process(pair):
    cpu, ddp = pair["cpu"], pair["ddp_cpu"]
    assert ddp["n_examples"] == cpu["n_examples"] == N and cpu["baseline"] == "mean"
    assert differences(cpu, ddp) == []
    for s in ddp["saes"].values():
        assert s["examples"]["ids"] == list(range(N))  # every example once, from both ranks
        assert sum(v["n"] for k, v in s["top"][0]["slices"].items() if k.startswith("label=")) == N
