"""scripts/bench.py --tiny: saeeval and sae_lens's run_evals agree on the same tokens (no timing assertions)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"
LAST_LINE = re.compile(r"^speedup=(\d+\.\d+) max_rel_diff=(\S+) floor_ratio=(\d+\.\d+)$")


@pytest.mark.slow
def test_tiny_bench_matches_sae_lens_and_ends_with_the_summary_line() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--tiny"], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    match = LAST_LINE.match(last)
    assert match, last
    speedup, max_rel_diff, floor_ratio = (float(g) for g in match.groups())
    assert max_rel_diff <= 1e-4
    assert speedup > 0 and floor_ratio > 0
    assert "15 saeeval conditions" in proc.stdout  # 8 SAEs + one zero ablation for each of the 7 hooks
