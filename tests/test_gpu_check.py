"""scripts/gpu_check.py: its CPU dry run passes end to end (so the script itself is known to run before a GPU
does), and a library version outside pyproject.toml's ranges stops it in one line."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
VARIANTS = ("f32", "bf16", "bf16true", "bf16mixed", "fp16mixed", "placed", "ddp")


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_cpu_dry_run_covers_every_road_and_passes(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--allow-cpu", "--quick", "--keep", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("gpu_check: versions torch=") and "huggingface-hub=" in lines[0]
    summary = lines[-1]
    assert summary.endswith("status=PASS"), summary
    for setup in ("zoo", "gpt2"):
        for variant in VARIANTS:
            assert re.search(rf"\b{setup}_{variant}_s=\d", summary), (setup, variant)
    # float32 variants equal the reference on the CPU; the half-precision ones really ran in half precision
    assert float(re.search(r"zoo_placed_maxrel=(\S+)", summary)[1]) == 0.0
    assert float(re.search(r"zoo_bf16true_ld_maxabs=(\S+)", summary)[1]) > 0.0
    assert (tmp_path / "zoo-bf16true" / "features.json").is_file()  # features with the mean baseline in bf16-true


def test_versions_outside_pyproject_ranges_are_refused_in_one_line(monkeypatch, capsys) -> None:
    gpu_check = load_script()
    assert gpu_check.check_versions()[1] == []  # this environment is in range
    real = metadata.version
    monkeypatch.setattr(gpu_check.metadata, "version", lambda name: "4.44.0" if name == "transformers" else real(name))
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--allow-cpu", "--quick"])
    assert gpu_check.main() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "gpu_check: transformers 4.44.0 is outside pyproject.toml's range <6,>=5.9: pip install 'transformers<6,>=5.9'"
    ]
