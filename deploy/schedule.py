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
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from cronsim import CronSim, CronSimError

from pipeline.run_dir import write_json
from spaces.errors import UserError, cut

__all__ = ["CronSchedule", "CronError", "ScheduleLockedError", "schedule_lock", "run_tick", "run_forever"]


class CronError(UserError):
    """A cron expression is malformed; the message names the field."""


class ScheduleLockedError(UserError):
    """Another scheduled run holds the lock."""


# cron's nicknames (Vixie cron, crontab(5)); cronsim parses only the five fields they stand for
_NICKNAMES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
              "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
# cronsim's "Bad <field>" names, in field order, and what each field allows
_FIELDS = {"minute": ("minute", "0-59"),
           "hour": ("hour", "0-23"),
           "day-of-month": ("day of month", "1-31 (a day the months given have), L, LW"),
           "month": ("month", "1-12 or JAN-DEC"),
           "day-of-week": ("day of week", "0-7 or SUN-SAT (0 and 7 = Sunday), d#n, dL")}
_SYNTAX = "'*', 'a-b', 'a,b', '*/n' or 'a-b/n' with n >= 1"


@dataclass(frozen=True)
class CronSchedule:
    """A standard five-field cron expression (minute hour day-of-month month day-of-week) or a nickname, UTC.

    Parsed and evaluated by ``cronsim`` (names, ranges with steps, ``L``, ``#``, and
    cron's rule that when both day fields are restricted either may match);
    ``@daily`` and the other nicknames stand for their five fields.
    """

    expression: str
    fields: str  # the five fields the expression stands for

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        fields = _NICKNAMES.get(expression.strip().lower(), expression)
        parts = fields.split()
        if len(parts) != 5:
            raise CronError(f"cron expression {cut(expression)!r} needs 5 fields (minute hour day month weekday) "
                            f"or one of {', '.join(_NICKNAMES)}, got {len(parts)} fields")
        try:
            next(CronSim(fields, datetime(2000, 1, 1, tzinfo=timezone.utc)))
        except CronSimError as err:
            raise _field_error(str(err), parts) from None
        except StopIteration:  # cronsim looks 50 years ahead; every real schedule repeats well within that
            raise CronError(f"cron expression {cut(expression)!r} never matches") from None
        return cls(expression, " ".join(parts))

    def next_after(self, moment: datetime) -> datetime:
        """The first matching minute strictly after ``moment`` (UTC; a naive moment is taken as UTC)."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return next(CronSim(self.fields, moment.astimezone(timezone.utc)))


def _field_error(message: str, parts: list[str]) -> CronError:
    """cronsim's ``Bad <field>`` as a message that quotes the user's field and what it allows."""
    name = message.removeprefix("Bad ").strip()
    if name not in _FIELDS:  # not a per-field message: pass cronsim's own words on
        return CronError(f"cron expression {cut(' '.join(parts))!r}: {message}")
    index = list(_FIELDS).index(name)
    label, allowed = _FIELDS[name]
    return CronError(f"{label} field {cut(parts[index])!r}: allowed values {allowed}, combined as {_SYNTAX}")


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
