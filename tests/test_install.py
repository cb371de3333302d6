"""A non-editable install (a built wheel) finds its Hydra configs, task data and zoo from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_install_runs_from_another_directory(tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )
    assert (site / "saeeval" / "conf" / "task" / "ioi.yaml").exists()
    env = {**os.environ, "PYTHONPATH": str(site)}
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", "import saeeval, sys; print(saeeval.__file__)"],
        capture_output=True, text=True, env=env, cwd=cwd, check=True,
    )
    assert proc.stdout.strip().startswith(str(site))  # the wheel, not the checkout
    proc = subprocess.run(
        [sys.executable, "-m", "saeeval", "+task=ioi", "limit=8", "hydra.run.dir=out"],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((cwd / "out" / "results.json").read_text())
    assert doc["task"]["n_examples"] == 8 and doc["model"]["name"] == "tiny"
