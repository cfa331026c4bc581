"""Liveness of a run's driver as ``autospace status`` reports it: real processes, real status files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.driver import driver_alive, driver_record
from pipeline.run_dir import heartbeat, read_status, record_driver


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _run_dir(tmp_path: Path, driver: dict | None) -> Path:
    (tmp_path / "config.yaml").write_text("{}")
    status = {"phase": "evolution", "generations": 3, "running_trials": 2, "updated_at": 0.0}
    (tmp_path / "status.json").write_text(json.dumps({**status, **({"driver": driver} if driver else {})}))
    return tmp_path


def test_this_process_is_alive_and_a_finished_one_is_not() -> None:
    me = driver_record()
    assert me["pid"] == os.getpid() and me["host"] == socket.gethostname()
    assert driver_alive(me) is True
    assert driver_alive({**me, "pid": _dead_pid()}) is False


def test_a_reused_pid_is_not_the_driver() -> None:
    if driver_record()["start"] is None:
        pytest.skip("process start times are read from /proc (Linux)")
    assert driver_alive({**driver_record(), "start": "another-boot:1"}) is False


def test_unknown_when_it_cannot_be_told() -> None:
    assert driver_alive({**driver_record(), "host": "another-host.invalid"}) is None
    assert driver_alive(None) is None and driver_alive({"pid": "7", "host": 5}) is None


def _lines(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """``autospace status`` output as {key: value} (keys padded to 19 columns)."""
    return {line[:19].strip(): line[19:] for line in capsys.readouterr().out.splitlines() if line.strip()}


def test_status_says_a_dead_run_is_not_running_with_when_it_was_last_seen(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _run_dir(tmp_path, {**driver_record(), "pid": _dead_pid(), "start": None})
    os.utime(run_dir / "status.json", (1_767_225_600, 1_767_225_600))  # 2026-01-01 00:00:00 UTC
    assert main(["status", str(run_dir)]) == 0
    lines = _lines(capsys)
    assert lines["phase"].startswith("not running (last seen 2026-01-01 00:00:00 UTC, was: evolution)")
    assert lines["trials running"] == "0"  # no trials are running in a dead run
    info = read_status(run_dir)
    assert info["running"] is False and info["last_seen"] == 1_767_225_600
    assert info["status"]["running_trials"] == 2  # the file itself is left as the run wrote it


def test_a_live_run_shows_its_phase_and_its_heartbeat(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _run_dir(tmp_path, None)
    record_driver(run_dir)
    os.utime(run_dir / "status.json", (0, 0))
    heartbeat(run_dir)
    info = read_status(run_dir)
    assert info["running"] is True and info["last_seen"] > 1e9
    assert info["status"]["running_trials"] == 2 and info["status"]["driver"]["pid"] == os.getpid()
    assert main(["status", str(run_dir)]) == 0
    lines = _lines(capsys)
    assert lines["phase"] == "evolution" and lines["trials running"] == "2"


def test_a_failed_run_says_why_and_resuming_clears_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _run_dir(tmp_path, {**driver_record(), "pid": _dead_pid()})
    status = json.loads((run_dir / "status.json").read_text())
    (run_dir / "status.json").write_text(json.dumps({**status, "phase": "failed", "error": "the final search failed"}))
    assert main(["status", str(run_dir)]) == 0
    lines = _lines(capsys)
    assert lines["phase"].startswith("failed: the final search failed") and lines["trials running"] == "0"
    record_driver(run_dir)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["phase"] == "resuming" and "error" not in status
