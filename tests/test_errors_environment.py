"""What the machine lacks (a CUDA GPU, SLURM, a cached hub model offline): one line within seconds, before
anything is loaded, exit 2, no traceback."""

from __future__ import annotations

import os
import time

import pytest
from cli_harness import digest, run_inprocess, run_subprocess, with_prior_results

from saeeval.cli.environment import check_launcher


@pytest.fixture
def no_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["device=cuda"], ["device=cuda needs a CUDA GPU", "device=cpu trainer=cpu"]),
        (["device=cuda:1"], ["device=cuda:1 needs a CUDA GPU"]),
        (["trainer=gpu"], ["trainer.accelerator=gpu needs a CUDA GPU"]),
        (["trainer=ddp"], ["trainer.accelerator=gpu needs a CUDA GPU"]),
    ],
)
def test_gpu_asked_without_cuda_is_one_line(tmp_path, capfd, no_cuda, overrides, needles):
    before = with_prior_results(tmp_path)
    start = time.monotonic()
    run_inprocess("+task=ioi", "force=true", *overrides, out=tmp_path, capfd=capfd).assert_one_line_error(*needles)
    assert time.monotonic() - start < 20  # refused before any model is loaded
    assert digest(tmp_path) == before


def test_slurm_launcher_without_sbatch_on_path_is_one_line(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # a machine without SLURM, whatever this one has
    outcome = run_inprocess(
        "-m",
        "+task=ioi,toxicity",
        "hydra/launcher=submitit_slurm",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        capfd=capfd,
    )
    outcome.assert_one_line_error(
        "hydra/launcher=submitit_slurm needs SLURM", "sbatch is not on PATH", "hydra/launcher=submitit_local"
    )
    assert not (tmp_path / "sweep").exists()


def test_slurm_check_passes_when_sbatch_is_on_path(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text("#!/bin/sh\nexit 0\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    check_launcher(["-m", "+task=ioi", "hydra/launcher=submitit_slurm"])  # no error: SLURM is there


@pytest.mark.slow
def test_uncached_hub_model_offline_is_one_line(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "empty-hf-cache"), "HF_HUB_OFFLINE": "1"}
    outcome = run_subprocess("+task=ioi", "model=gpt2-small", out=tmp_path / "out", env=env)
    outcome.assert_one_line_error("gpt2-small", "not available offline")


def test_slurm_launcher_with_an_unreachable_controller_is_one_line(tmp_path, capfd, monkeypatch):
    """sbatch exists but the controller is down: what SLURM's `scontrol ping` prints then (seen on the local
    cluster of scripts/slurm_local.sh with slurmctld stopped), as one line, before any job is submitted."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed' >&2\nexit 1\n")
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 'Slurmctld(primary) at vm is DOWN'\nexit 1\n")
    for tool in ("sbatch", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    outcome = run_inprocess("-m", "+task=ioi", "hydra/launcher=submitit_slurm", out=tmp_path, capfd=capfd)
    outcome.assert_one_line_error(
        "SLURM controller cannot be reached (scontrol ping: Slurmctld(primary) at vm is DOWN)",
        "start slurmctld",
        "hydra/launcher=submitit_local",
    )
