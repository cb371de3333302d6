"""`python -m saeeval +task=toxicity`: the Hydra entry point."""

from __future__ import annotations

import sys
import warnings
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from saeeval.choices import check_choices
from saeeval.errors import SaeevalError, print_error


# Our launcher files extend the submitit plugin's schema of the same name; Hydra warns about that merge.
warnings.filterwarnings(
    "ignore", message=r"\s*'hydra/launcher/submitit_(slurm|local)' is validated against ConfigStore schema"
)


def fail(err: SaeevalError) -> NoReturn:
    """The user-facing end of a bad input: the error line and exit status 2."""
    print_error(err)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="pkg://saeeval.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from pathlib import Path

    from saeeval.evaluate import evaluate

    try:
        evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))
    except SaeevalError as err:
        fail(err)


if __name__ == "__main__":
    try:
        check_choices(sys.argv[1:])
    except SaeevalError as err:
        fail(err)
    main()
