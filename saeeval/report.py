"""`python -m saeeval.report outputs/`: compare finished runs (saeeval.cli.report), inside the one-line error boundary
(installed before the report's heavy imports, so a Ctrl-C at any moment is one line too)."""

import sys

from saeeval.cli.boundary import run_cli


def _report() -> None:
    from saeeval.cli.report import main

    sys.exit(main())


if __name__ == "__main__":
    run_cli(_report)
