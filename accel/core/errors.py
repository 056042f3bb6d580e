"""The exception types users see: a one-line message, exit status 2 from the CLI."""
from __future__ import annotations


class AccelError(Exception):
    """A problem with the user's input or environment, explained in one line.

    The CLI prints ``accel: error: <message>`` and exits with status 2; no traceback.
    """


class ConfigError(AccelError):
    """A config field with a bad value. ``field`` names it and ``problem`` says what is wrong, so the CLI can say
    the same of the flag that set the field ("--bits must be between 2 and 8, got 9")."""

    def __init__(self, owner: str, field: str, problem: str):
        super().__init__(f"{owner}.{field} {problem}" if field else f"{owner} {problem}")
        self.owner, self.field, self.problem = owner, field, problem
