"""`python -m saeeval.report outputs/`: the comparison report's command line (the page is built by
saeeval.publish.html_report, the wandb report by saeeval.publish.wandb_report)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from saeeval.cli.boundary import EXIT_ERROR, os_error
from saeeval.errors import SaeevalError, print_error
from saeeval.publish.html_report import load_runs, write_report


def main(argv: Sequence[str] | None = None) -> int:
    """Build the report for the runs under `argv`'s paths; returns the exit status (2 for a user error)."""
    parser = argparse.ArgumentParser(
        prog="python -m saeeval.report",
        description="Compare finished saeeval runs in one self-contained HTML page (and optionally a wandb report).",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, multirun folders or results.json files")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("report.html"),
        help="HTML file to write; its PNGs go to <stem>_files/ (default: %(default)s)",
    )
    parser.add_argument(
        "--wandb-report",
        metavar="ENTITY/PROJECT",
        help="also publish the comparison as a wandb report (needs wandb login and network)",
    )
    args = parser.parse_args(argv)
    try:
        if args.wandb_report:
            from saeeval.publish.wandb_report import parse_target, publish_wandb_report

            parse_target(args.wandb_report)
        runs = load_runs(args.paths)
        print(f"saeeval: report written to {write_report(runs, args.out)}")
        if args.wandb_report:
            print(f"saeeval: wandb report saved to {publish_wandb_report(runs, args.wandb_report)}")
    except SaeevalError as err:
        print_error(err)
        return EXIT_ERROR
    except OSError as err:  # a full disk or a read-only --out: one line; a bug's OSError keeps its traceback
        line = os_error(err, args.out.parent, other="--out file")
        if line is None:
            raise
        print_error(line)
        return EXIT_ERROR
    return 0
