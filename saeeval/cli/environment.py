"""Check that the machine can do what the config asks (a CUDA GPU, a SLURM cluster) before anything loads,
so a missing piece is one line within seconds instead of a failure deep inside Lightning or submitit."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from omegaconf import DictConfig

from saeeval.cli.resolvers import GPU_ACCELERATORS
from saeeval.errors import SaeevalError

SLURM_ANSWER_S = 20
"""How long `scontrol ping` may take before the sweep is refused (it answers at once, also when the controller is
down; sinfo and sbatch instead retry for about 30 s before they say so)."""


def check_launcher(argv: Sequence[str]) -> None:
    """A SLURM sweep needs SLURM's `sbatch` (submitit calls it to submit each job) and a controller that answers:
    otherwise submitit fails on the first submission with a traceback."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if not (multirun and "hydra/launcher=submitit_slurm" in argv):
        return
    if shutil.which("sbatch") is None:
        raise SaeevalError(
            "hydra/launcher=submitit_slurm needs SLURM, but sbatch is not on PATH: run from a SLURM login node, "
            "or sweep on this machine with hydra/launcher=submitit_local (or the default launcher)"
        )
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return  # nothing to ask; sbatch itself will tell
    fix = "start slurmctld or fix this node's slurm.conf, or sweep on this machine with hydra/launcher=submitit_local"
    try:
        proc = subprocess.run([scontrol, "ping"], capture_output=True, text=True, timeout=SLURM_ANSWER_S)
    except subprocess.TimeoutExpired:
        raise SaeevalError(
            f"the SLURM controller did not answer scontrol ping within {SLURM_ANSWER_S} s: {fix}"
        ) from None
    if proc.returncode != 0:
        said = ((proc.stdout + proc.stderr).strip().splitlines() or [f"exit status {proc.returncode}"])[0]
        raise SaeevalError(f"the SLURM controller cannot be reached (scontrol ping: {said}): {fix}")


def check_devices(cfg: DictConfig) -> None:
    """device=cuda and trainer=gpu/ddp need a CUDA device that torch can see."""
    device = str(cfg.get("device") or "cpu")
    trainer = cfg.get("trainer") or {}
    accelerator = str(trainer.get("accelerator") or "cpu")
    wants = device.startswith("cuda") or accelerator in GPU_ACCELERATORS
    if not wants:
        return
    import torch

    if torch.cuda.is_available():
        return
    what = f"device={device}" if device.startswith("cuda") else f"trainer.accelerator={accelerator}"
    raise SaeevalError(
        f"{what} needs a CUDA GPU, but torch sees none (torch {torch.__version__}, "
        f"{'CPU-only build' if torch.version.cuda is None else 'CUDA ' + torch.version.cuda}): run on a GPU "
        "machine, or use device=cpu trainer=cpu"
    )
