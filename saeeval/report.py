"""`python -m saeeval.report outputs/`: compare finished runs (saeeval.cli.report), inside the one-line error boundary."""

import sys

from saeeval.cli.boundary import run_cli
from saeeval.cli.report import main

if __name__ == "__main__":
    run_cli(lambda: sys.exit(main()))
