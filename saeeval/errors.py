"""The one exception type that reaches the user as a single line instead of a traceback."""


class SaeevalError(Exception):
    """A problem with the user's input; the message is one line that names the problem and the fix."""
