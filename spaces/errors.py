"""The one base class of every error the user's input causes.

It lives in the lowest layer (``spaces`` imports nothing of the project's
upper layers) so that ``spaces``, ``evolve``, ``pipeline`` and ``deploy`` can
all raise subclasses of it, and the CLI can turn any of them into one
``error: ...`` line and exit status 2 without knowing every module's errors.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["UserError", "cut"]

_ECHO_LIMIT = 200


class UserError(ValueError):
    """Bad input (config, file, argument): the message names what is wrong and how to fix it."""


def cut(text: str, limit: int = _ECHO_LIMIT) -> str:
    """``text`` shortened for echoing in a message, so a 50 MB input does not become a 50 MB error."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
