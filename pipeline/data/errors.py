"""The one exception type of the data layer."""

from __future__ import annotations

from spaces.errors import UserError

__all__ = ["DataError"]


class DataError(UserError):
    """Bad input data or a bad data file.

    Messages are written for the person who supplied the data: they name the
    file or field, say what is wrong and how to fix it. The CLI prints them as
    ``error: <message>`` and exits with status 2.
    """
