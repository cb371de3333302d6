"""The one exception type that reaches the user as a single line instead of a traceback."""


class SaeevalError(Exception):
    """A problem with the user's input; the message is one line that names the problem and the fix."""


def print_error(err: SaeevalError) -> None:
    """Show a user error the one way every saeeval command does: one line on stderr, no traceback."""
    import sys

    print(f"saeeval: error: {err}", file=sys.stderr)
