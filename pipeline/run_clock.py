"""The run's clock: the seconds of work a run directory has had, across resumes, against ``wall_time_minutes``.

Why a clock of its own and not the time since the run started: a run resumed a
day after a crash has not used that day. Why not the sum of the stages' own
budgets: a stage that finishes early (an evolution whose next generation would
not fit, a short final search) leaves time that only a whole-run budget can hand
on to the final training, which re-plans its epochs against it
(:func:`deploy.retrain.training_minutes`).

The count is saved in ``clock.json`` whenever the run's status changes (every
generation and phase), so a crash loses at most the time since the last change
from it; a final training's own seconds are kept in its checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from spaces.atomic import write_text_atomically

__all__ = ["CLOCK_FILE", "RunClock", "worked_seconds"]

logger = logging.getLogger(__name__)

CLOCK_FILE = "clock.json"


class RunClock:
    """Seconds of work of one run directory: those saved by earlier sessions plus this session's."""

    def __init__(self, root: Path, budget_minutes: float | None) -> None:
        self.path = Path(root) / CLOCK_FILE
        self.budget_minutes = budget_minutes
        self._saved = _saved_seconds(self.path)
        self._start = time.monotonic()

    def seconds(self) -> float:
        return self._saved + time.monotonic() - self._start

    def minutes_left(self) -> float | None:
        """What the budget leaves now (negative once it is spent); None without a budget."""
        return None if self.budget_minutes is None else self.budget_minutes - self.seconds() / 60

    def save(self) -> None:
        write_text_atomically(self.path, json.dumps({"seconds": self.seconds()}))


def worked_seconds(root: Path) -> float | None:
    """The seconds of work ``root``'s run saved last (``autospace status``); None before the run saved any."""
    path = Path(root) / CLOCK_FILE
    return _saved_seconds(path) if path.exists() else None


def _saved_seconds(path: Path) -> float:
    """The count an earlier session saved; 0 for a new run, or (with a warning) for an unreadable file."""
    if not path.exists():
        return 0.0
    try:
        seconds = json.loads(path.read_text())["seconds"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        seconds = None
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds >= 0:
        return float(seconds)
    logger.warning("%s cannot be read; the run's clock starts again from 0 (wall_time_minutes then binds later)",
                   path)
    return 0.0
