"""Remember the run's output folder as soon as Hydra knows it (a Hydra callback), so that a write failing
before saeeval's own code runs (Hydra's .hydra/*.yaml on a full disk; a failed write() names no file) can
still be reported as one line naming the folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from saeeval.cli import boundary


class RememberOutputFolder(Callback):
    """Registered in conf/config.yaml under hydra.callbacks."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        boundary.run_folder = Path(str(OmegaConf.select(config, "hydra.run.dir"))).absolute()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        boundary.run_folder = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))).absolute()
