"""`python -m saeeval +task=toxicity`: the Hydra entry point."""

from __future__ import annotations

import sys
import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from saeeval.choices import check_choices
from saeeval.errors import SaeevalError


# Our launcher files extend the submitit plugin's schema of the same name; Hydra warns about that merge.
warnings.filterwarnings(
    "ignore", message=r"\s*'hydra/launcher/submitit_(slurm|local)' is validated against ConfigStore schema"
)


@hydra.main(version_base="1.3", config_path="pkg://saeeval.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from pathlib import Path

    from saeeval.evaluate import evaluate

    try:
        evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))
    except SaeevalError as err:
        print(f"saeeval: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    try:
        check_choices(sys.argv[1:])
    except SaeevalError as err:
        print(f"saeeval: error: {err}", file=sys.stderr)
        sys.exit(2)
    main()
