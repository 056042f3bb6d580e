"""The exception types users see: a one-line message, exit status 2 from the CLI.

Messages name settings as a library user writes them: a config's field (``QuantConfig.w_bits``) or a
function's parameter, in backticks inside the text ("pass `resume` to continue it"). The command
line, and only it, turns those names into its flags ("--bits", "--resume").
"""

from __future__ import annotations


class AccelError(Exception):
    """A problem with the user's input or environment, explained in one line.

    The CLI prints ``accel: error: <message>`` and exits with status 2; no traceback.
    """


class ConfigError(AccelError):
    """A setting with a bad value: ``field`` of ``owner`` (a config class, a stage or a function),
    and ``problem``, what is wrong with it. The CLI says the same of the flag that set the field
    ("--bits must be between 2 and 8, got 9"), a recipe of its key ("key 'bits' must be ...")."""

    def __init__(self, owner: str, field: str, problem: str):
        super().__init__(f"{owner}.{field} {problem}" if field else f"{owner} {problem}")
        self.owner, self.field, self.problem = owner, field, problem


def one_line(error: BaseException, limit: int = 300) -> str:
    """A dependency's error message folded into one line (diffusers and ONNX Runtime write
    several)."""
    text = " ".join(str(error).split())
    return (text[:limit] + "...") if len(text) > limit else text or type(error).__name__
