"""`python -m saeeval +task=toxicity`: the Hydra entry point."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from saeeval.errors import SaeevalError


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
    main()
