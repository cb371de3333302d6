"""The one exception type that reaches the user as a single line (the command-line boundary, saeeval.cli.boundary,
turns it into that line; the API raises it as itself).

Every layer raises it, so this module imports nothing of saeeval.
"""

from __future__ import annotations

import sys


class SaeevalError(Exception):
    """A problem with the user's input; the message is one line that names the problem and the fix."""


def print_error(err: SaeevalError) -> None:
    """Show a user error the one way every saeeval command does: one line on stderr, no traceback."""
    print(f"saeeval: error: {' '.join(str(err).split())}", file=sys.stderr)


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): how a library's multi-line
    error is quoted inside a one-line SaeevalError."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
