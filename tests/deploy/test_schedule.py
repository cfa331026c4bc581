"""Scheduling: cron expressions, the overlap lock, resuming an interrupted scheduled run."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from deploy.schedule import CronError, CronSchedule, ScheduleLockedError, run_forever, run_tick, schedule_lock

UTC = timezone.utc


@pytest.mark.parametrize("expression, now, expected", [
    ("*/15 * * * *", datetime(2026, 1, 1, 10, 7, tzinfo=UTC), datetime(2026, 1, 1, 10, 15, tzinfo=UTC)),
    ("0 3 * * *", datetime(2026, 1, 1, 3, 0, tzinfo=UTC), datetime(2026, 1, 2, 3, 0, tzinfo=UTC)),
    ("30 2 * * 1", datetime(2026, 11, 24, 12, 0, tzinfo=UTC), datetime(2026, 11, 30, 2, 30, tzinfo=UTC)),  # Monday
    ("0 0 1 1,7 *", datetime(2026, 2, 1, 0, 0, tzinfo=UTC), datetime(2026, 7, 1, 0, 0, tzinfo=UTC)),
    ("0 12 13 * 5", datetime(2026, 11, 10, 0, 0, tzinfo=UTC), datetime(2026, 11, 13, 12, 0, tzinfo=UTC)),  # 13th or Fri
    ("5-10/5 8 * * *", datetime(2026, 1, 1, 8, 5, tzinfo=UTC), datetime(2026, 1, 1, 8, 10, tzinfo=UTC)),
    # names, nicknames, steps over ranges, 7 = Sunday, last day of the month, nth weekday
    ("0 9 * JAN-MAR mon-fri", datetime(2026, 3, 27, 9, 0, tzinfo=UTC), datetime(2026, 3, 30, 9, 0, tzinfo=UTC)),
    ("@daily", datetime(2026, 1, 1, 3, 0, tzinfo=UTC), datetime(2026, 1, 2, 0, 0, tzinfo=UTC)),
    ("@hourly", datetime(2026, 1, 1, 3, 0, 30, tzinfo=UTC), datetime(2026, 1, 1, 4, 0, tzinfo=UTC)),
    ("@weekly", datetime(2026, 11, 25, 0, 0, tzinfo=UTC), datetime(2026, 11, 29, 0, 0, tzinfo=UTC)),  # Sunday
    ("@monthly", datetime(2026, 1, 31, 0, 0, tzinfo=UTC), datetime(2026, 2, 1, 0, 0, tzinfo=UTC)),
    ("@yearly", datetime(2026, 6, 1, 0, 0, tzinfo=UTC), datetime(2027, 1, 1, 0, 0, tzinfo=UTC)),
    ("0 8-18/4 * * *", datetime(2026, 1, 1, 12, 0, tzinfo=UTC), datetime(2026, 1, 1, 16, 0, tzinfo=UTC)),
    ("0 0 * * 7", datetime(2026, 11, 25, 0, 0, tzinfo=UTC), datetime(2026, 11, 29, 0, 0, tzinfo=UTC)),
    ("0 0 L 2 *", datetime(2028, 1, 1, 0, 0, tzinfo=UTC), datetime(2028, 2, 29, 0, 0, tzinfo=UTC)),  # leap year
    ("0 0 * * FRI#1", datetime(2026, 11, 10, 0, 0, tzinfo=UTC), datetime(2026, 12, 4, 0, 0, tzinfo=UTC)),
])
def test_next_after(expression: str, now: datetime, expected: datetime) -> None:
    assert CronSchedule.parse(expression).next_after(now) == expected


def test_a_naive_moment_is_utc_and_a_zoned_one_is_converted() -> None:
    schedule = CronSchedule.parse("0 3 * * *")
    assert schedule.next_after(datetime(2026, 1, 1, 2, 0)) == datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    tokyo = timezone(timedelta(hours=9))
    assert schedule.next_after(datetime(2026, 1, 1, 11, 0, tzinfo=tokyo)) == datetime(2026, 1, 1, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize("expression, message", [
    ("* * * *", "needs 5 fields"),
    ("0 * * * * *", "needs 5 fields"),  # cronsim's seconds field is not cron's
    ("@sometimes", "needs 5 fields .* or one of @yearly"),
    ("60 * * * *", "minute field '60': allowed values 0-59"),
    ("* 24 * * *", "hour field '24'"),
    ("* * 0 * *", "day of month field '0'"),
    ("0 0 30 2 *", "day of month field '30'"),  # no February has one
    ("* * * 13 *", "month field '13': allowed values 1-12 or JAN-DEC"),
    ("* * * * 8", "day of week field '8'"),
    ("* * * * monday", "day of week field 'monday'"),
    ("*/0 * * * *", "minute field '\\*/0'.* with n >= 1"),
    ("*/ * * * *", "minute field '\\*/'"),
    ("5-1 * * * *", "minute field '5-1'"),
    ("* , * * *", "hour field ','"),
])
def test_bad_cron_expressions_name_the_field(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        CronSchedule.parse(expression)


def test_a_second_scheduler_refuses_while_one_runs(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from deploy.schedule import schedule_lock\n"
        f"with schedule_lock(Path({str(tmp_path / 'scheduled')!r})):\n"
        "    print('locked', flush=True); time.sleep(30)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        calls: list[Path] = []
        with pytest.raises(ScheduleLockedError, match=r"another scheduled run holds .*pid \d+"):
            run_tick(tmp_path, lambda run_dir, resume: calls.append(run_dir) or {})
        assert calls == []
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock: a new run goes ahead
    assert run_tick(tmp_path, lambda run_dir, resume: {"ok": True})["ok"]


def test_an_interrupted_run_is_resumed_not_restarted(tmp_path: Path) -> None:
    seen: list[tuple[Path, bool]] = []

    def crashing(run_dir: Path, resume: bool) -> dict:
        seen.append((run_dir, resume))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_tick(tmp_path, crashing, now=datetime(2026, 1, 1, 3, 0, tzinfo=UTC))

    def finishing(run_dir: Path, resume: bool) -> dict:
        seen.append((run_dir, resume))
        return {"champion": "v1"}

    record = run_tick(tmp_path, finishing, now=datetime(2026, 1, 2, 3, 0, tzinfo=UTC))
    assert seen[0][0] == seen[1][0] == tmp_path / "scheduled" / "20260101T030000Z"
    assert [resume for _, resume in seen] == [False, True]
    assert record == {"run_dir": str(seen[0][0]), "resumed": True, "champion": "v1"}
    fresh = run_tick(tmp_path, finishing, now=datetime(2026, 1, 3, 3, 0, tzinfo=UTC))
    assert fresh["resumed"] is False and fresh["run_dir"].endswith("20260103T030000Z")


def test_run_forever_waits_for_each_due_time(tmp_path: Path) -> None:
    slept: list[float] = []
    runs = run_forever(tmp_path, CronSchedule.parse("* * * * *"), lambda run_dir, resume: {"n": 1}, max_runs=2,
                       sleep=slept.append)
    assert len(runs) == 2 and len(slept) == 2 and all(0 <= s <= 61 for s in slept)


def test_lock_excludes_a_second_holder_and_is_released_on_exit(tmp_path: Path) -> None:
    with schedule_lock(tmp_path):
        with pytest.raises(ScheduleLockedError):
            with schedule_lock(tmp_path):
                pass
    with schedule_lock(tmp_path):
        assert "pid" in (tmp_path / ".lock").read_text()
