"""Scheduled pipeline runs: a cron expression, a lock so runs never overlap, resume after interruption.

``autospace schedule --config FILE --cron "0 3 * * *"`` stays in the foreground
and starts a run at every matching minute; ``--once`` does one run now, which
is how to use it from cron, a systemd timer, a Kubernetes CronJob or Ray Jobs
(see ``docs/schedule.md``). Runs live under ``<out_dir>/scheduled/<UTC stamp>``.

- **Lock.** ``<out_dir>/scheduled/.lock`` is held with ``flock`` for the whole
  run; the kernel releases it when the process dies, so a crash never leaves a
  stale lock, and a second scheduler refuses cleanly while one runs.
- **Resume.** ``<out_dir>/scheduled/schedule.json`` names the current run until
  it finished; the next tick resumes that run instead of starting over.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

from pipeline.run_dir import write_json
from spaces.errors import UserError

__all__ = ["CronSchedule", "CronError", "ScheduleLockedError", "schedule_lock", "run_tick", "run_forever"]


class CronError(UserError):
    """A cron expression is malformed; the message names the field."""


class ScheduleLockedError(UserError):
    """Another scheduled run holds the lock."""


_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 6))


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                start, end = low, high
            elif "-" in body:
                start, end = (int(v) for v in body.split("-", 1))
            else:
                start = end = int(body)
        except ValueError:
            raise CronError(f"{name} field {text!r}: use numbers, '*', 'a-b', 'a,b' or '*/n'") from None
        if step < 1 or not low <= start <= end <= high:
            raise CronError(f"{name} field {text!r}: values must lie in {low}-{high} (steps >= 1)")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    """A standard five-field cron expression (minute hour day-of-month month day-of-week, 0 = Sunday), UTC."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        parts = expression.split()
        if len(parts) != 5:
            raise CronError(f"cron expression {expression!r} needs 5 fields (minute hour day month weekday), "
                            f"got {len(parts)}")
        sets = [_parse_field(p, *spec) for p, spec in zip(parts, _FIELDS)]
        return cls(expression, *sets, any_day=parts[2] == "*", any_weekday=parts[4] == "*")

    def matches(self, moment: datetime) -> bool:
        # cron's rule: when both day fields are restricted, either may match
        day_ok = moment.day in self.days
        weekday_ok = (moment.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            day = day_ok and weekday_ok
        else:
            day = day_ok or weekday_ok
        return day and moment.minute in self.minutes and moment.hour in self.hours and moment.month in self.months

    def next_after(self, moment: datetime) -> datetime:
        """The first matching minute strictly after ``moment`` (searched minute by minute, within 5 years)."""
        candidate = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(5 * 366 * 24 * 60):
            if self.matches(candidate):
                return candidate
            candidate += timedelta(minutes=1)
        raise CronError(f"cron expression {self.expression!r} never matches")


@contextmanager
def schedule_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory/.lock`` for the duration; ScheduleLockedError if another process holds it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".lock"
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ScheduleLockedError(f"another scheduled run holds {path} ({holder}); "
                                      "wait for it to finish, this one does nothing") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the flock


def _read_state(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"current": None, "history": []}


def run_tick(base: Path, job: Callable[[Path, bool], dict], now: datetime | None = None) -> dict:
    """One scheduled run under the lock: resume the unfinished current run, else start a new one.

    ``job(run_dir, resume)`` does the whole pipeline for one run directory and returns its record.
    """
    directory = base / "scheduled"
    with schedule_lock(directory):
        state_path = directory / "schedule.json"
        state = _read_state(state_path)
        resume = state["current"] is not None
        if not resume:
            stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
            state["current"] = str(directory / stamp)
            write_json(state_path, state)
        run_dir = Path(state["current"])
        record = {"run_dir": str(run_dir), "resumed": resume, **job(run_dir, resume)}
        state["history"].append(record)
        state["current"] = None
        write_json(state_path, state)
        return record


def run_forever(base: Path, schedule: CronSchedule, job: Callable[[Path, bool], dict], *,
                max_runs: int | None = None, on_wait: Callable[[datetime], None] | None = None,
                sleep: Callable[[float], None] = time.sleep) -> list[dict]:
    """Run ``job`` at every time the schedule matches (UTC), in the foreground, ``max_runs`` times at most."""
    records: list[dict] = []
    while max_runs is None or len(records) < max_runs:
        now = datetime.now(timezone.utc)
        due = schedule.next_after(now)
        if on_wait is not None:
            on_wait(due)
        sleep(max(0.0, (due - datetime.now(timezone.utc)).total_seconds()))
        records.append(run_tick(base, job, now=due))
    return records
