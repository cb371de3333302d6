"""Check that the machine can do what the config asks (a CUDA GPU, a SLURM cluster) before anything loads,
so a missing piece is one line within seconds instead of a failure deep inside Lightning or submitit."""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from omegaconf import DictConfig

from saeeval.cli.resolvers import GPU_ACCELERATORS
from saeeval.errors import SaeevalError


def check_launcher(argv: Sequence[str]) -> None:
    """A SLURM sweep needs SLURM's `sbatch` (submitit calls it to submit each job)."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if multirun and "hydra/launcher=submitit_slurm" in argv and shutil.which("sbatch") is None:
        raise SaeevalError(
            "hydra/launcher=submitit_slurm needs SLURM, but sbatch is not on PATH: run from a SLURM login node, "
            "or sweep on this machine with hydra/launcher=submitit_local (or the default launcher)"
        )


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
