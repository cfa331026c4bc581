"""Why a run stopped, as errors the CLI prints on one line (no Ray or MLflow imported here).

A search that fails is scored as failed and the evolution goes on; a run cannot
go on when a generation's every search failed (the populations would learn
nothing) or when the final search failed (nothing to report or deploy). Both
stop the run before its state moves on, so ``autospace resume`` retries exactly
that step once the cause is fixed. A search stopped by the user's input (a
tampered checkpoint) stops the run at once, whichever search it was.
"""

from __future__ import annotations

from spaces.errors import UserError

__all__ = ["RunFailedError", "SearchInputError", "cause"]


class RunFailedError(RuntimeError):
    """Every search of a generation, or the final search, failed; the CLI exits with status 1."""


class SearchInputError(UserError):
    """A search stopped on the user's input (checkpoint, config); the CLI exits with status 2."""


def cause(error: str) -> str:
    """The one line of a (multi-line, traceback-laden) trial error that says what went wrong: its last."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    return lines[-1] if lines else error
