"""The Hydra entry point behind `python -m saeeval` and the `saeeval` command.

Everything runs inside `boundary.run_cli`, installed before Hydra or torch is imported, so a bad input, an
unwritable folder or a Ctrl-C at any moment (start-up included) ends as one line on stderr.
"""

from __future__ import annotations

import sys
import warnings

from saeeval.cli.boundary import fail, known_error, run_cli
from saeeval.cli.help import print_help, wants_help

# Our launcher files extend the submitit plugin's schema of the same name; Hydra warns about that merge.
warnings.filterwarnings(
    "ignore", message=r"\s*'hydra/launcher/submitit_(slurm|local)' is validated against ConfigStore schema"
)


def main(cfg) -> None:  # noqa: ANN001 -- a DictConfig; omegaconf is imported lazily for a fast Ctrl-C path
    """The Hydra task: check the config and the machine, then evaluate into the job's output folder."""
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    from saeeval.cli.config_check import check_config
    from saeeval.cli.environment import check_devices

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        check_config(cfg, HydraConfig.get().runtime.choices)
        check_devices(cfg)
        from saeeval.cli.job import run_config

        run_config(cfg, out_dir)
    except Exception as err:  # noqa: BLE001 -- a user error ends this job (and a sweep) as one line
        line = known_error(err, out_dir)
        if line is None:
            raise
        fail(line)


def cli() -> None:
    """Check what can be checked on the command line itself, then let Hydra compose and run `main`."""
    import hydra

    from saeeval.cli.choices import check_choices
    from saeeval.cli.config_check import widen_overrides
    from saeeval.cli.environment import check_launcher

    argv = sys.argv[1:]
    if wants_help(argv):
        print_help()
        return
    check_choices(argv)
    check_launcher(argv)
    sys.argv[1:] = widen_overrides(argv)
    hydra.main(version_base="1.3", config_path="pkg://saeeval.conf", config_name="config")(main)()


def entry() -> None:
    """`saeeval ...` and `python -m saeeval ...`: `cli` inside the one-line error boundary."""
    run_cli(cli)
