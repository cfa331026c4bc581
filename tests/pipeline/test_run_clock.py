"""The run's clock (work time across resumes) and the final training's share of ``wall_time_minutes``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploy.retrain import AFTER_TRAINING_MINUTES, training_minutes
from pipeline import run_clock
from pipeline.config import load_config
from pipeline.run_clock import CLOCK_FILE, RunClock


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The clock's monotonic time, set by the test (seconds)."""
    now = [1000.0]
    monkeypatch.setattr(run_clock, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


def test_the_clock_counts_work_across_sessions_not_the_time_between(tmp_path: Path, now: list[float]) -> None:
    clock = RunClock(tmp_path, 100)
    now[0] += 600
    clock.save()
    assert clock.minutes_left() == pytest.approx(90)
    now[0] += 3600 * 24  # the run lay dead for a day; a new session resumes it
    resumed = RunClock(tmp_path, 100)
    now[0] += 120
    assert resumed.seconds() == pytest.approx(720)
    assert resumed.minutes_left() == pytest.approx(88)
    assert RunClock(tmp_path, None).minutes_left() is None


def test_an_unreadable_clock_starts_from_zero_with_a_warning(tmp_path: Path, now: list[float],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / CLOCK_FILE).write_text('{"seconds": "soon"}')
    with caplog.at_level(logging.WARNING):
        assert RunClock(tmp_path, 10).seconds() == 0
    assert CLOCK_FILE in caplog.text and "cannot be read" in caplog.text


def test_the_final_training_gets_what_the_run_leaves_decided_once(tmp_path: Path, now: list[float],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(None, ["wall_time_minutes=100", "retrain.tuning_minutes=5"])
    clock = RunClock(tmp_path, config.wall_time_minutes)
    now[0] += 40 * 60
    assert training_minutes(config, None, tmp_path, 1) is None  # no run clock: retrain.minutes (null)
    assert training_minutes(config, clock, tmp_path, 1) == pytest.approx(60 - AFTER_TRAINING_MINUTES)
    now[0] += 10 * 60  # resumed later: the plan stands (the training's own seconds are in its checkpoint)
    assert training_minutes(config, clock, tmp_path, 1) == pytest.approx(60 - AFTER_TRAINING_MINUTES)
    assert json.loads((tmp_path / "budget.json").read_text())["wall_time_minutes"] == 100

    longer = load_config(None, ["wall_time_minutes=110", "retrain.tuning_minutes=5", "retrain.minutes=30"])
    assert training_minutes(longer, RunClock(tmp_path, 110), tmp_path, 1) == 30  # changed budget: decided anew
    two = tmp_path / "two"  # two trainings to go: the second's tuning comes off first, then an even share
    assert training_minutes(config, clock, two, 2) == pytest.approx((50 - 5) / 2 - AFTER_TRAINING_MINUTES)
    now[0] += 60 * 60  # the budget is spent: no minutes, so the training stops after its first epoch
    with caplog.at_level(logging.WARNING):
        assert training_minutes(config, clock, tmp_path / "late", 1) == 0
    assert "wall_time_minutes=100 is spent" in caplog.text
