"""The one exception type users see: a one-line message, exit status 2 from the CLI."""


class AccelError(Exception):
    """A problem with the user's input or environment, explained in one line.

    The CLI prints ``accel: error: <message>`` and exits with status 2; no traceback.
    """
