"""OmegaConf resolvers the launcher configs use to size a SLURM job from the trainer.

`conf/hydra/launcher/submitit_slurm.yaml` asks for `trainer.devices` tasks per job and, only when the trainer
runs on GPUs, as many GPUs: a CPU partition rejects any GPU request ("Invalid generic resource"). Registered
when `saeeval` is imported, so every process that composes or resolves a config (the CLI, a submitit job, the
tests) has them.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from saeeval.errors import SaeevalError

GPU_ACCELERATORS = ("gpu", "cuda")
"""Lightning accelerator names that run on NVIDIA GPUs: the one list the SLURM sizing and the device check read."""


def slurm_tasks(devices: Any) -> int:
    """Tasks per SLURM job: one per trainer device, so Lightning joins the scheduler's processes into one group."""
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise SaeevalError(
            f"hydra/launcher=submitit_slurm needs an integer trainer.devices >= 1 (got {devices!r}): SLURM starts "
            "one task per device; set e.g. trainer.devices=2"
        )
    return devices


def slurm_gpus(accelerator: Any, devices: Any) -> int | None:
    """GPUs per node for a job: trainer.devices on a GPU accelerator, none (no GPU request at all) otherwise.

    `auto` counts as CPU: whether it would find a GPU is only known on the node, and asking a CPU partition for
    one fails the whole submission; choose trainer=gpu or trainer=ddp to get GPUs.
    """
    if str(accelerator).lower() not in GPU_ACCELERATORS:
        return None
    return slurm_tasks(devices)


def register() -> None:
    """Make `${saeeval.slurm_tasks:...}` and `${saeeval.slurm_gpus:...}` available (idempotent)."""
    for name, fn in (("saeeval.slurm_tasks", slurm_tasks), ("saeeval.slurm_gpus", slurm_gpus)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
