"""When the evolution stops instead of going on: the checks on a generation's and the final search's outcomes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import RunFailedError, SearchInputError, cause
from pipeline.evolution_run import check_searches
from pipeline.ray_eval import SpaceEvaluation
from spaces.cost import Cost
from spaces.reference import reference_arch
from spaces.search import SearchResult

RAY_ERROR = ("Training failed due to worker errors:\n[Rank 0 Error Snippet]:\nTraceback (most recent call last):\n"
             '  File "ray_eval.py", line 9, in _search\n    raise RuntimeError("injected fault (always)")\n'
             "RuntimeError: injected fault (always)\n")


def _ok(index: int) -> SpaceEvaluation:
    return SpaceEvaluation(index, True, SearchResult(reference_arch(1, 28, 10), Cost(), 0.5), None, 1.0, 1)


def _failed(index: int, error: str = RAY_ERROR, input_error: bool = False) -> SpaceEvaluation:
    return SpaceEvaluation(index, False, None, error, 1.0, 1, input_error)


def test_a_generation_with_one_good_search_goes_on(tmp_path: Path) -> None:
    check_searches([_failed(0), _ok(1)], "generation 0", tmp_path / "results.json", tmp_path)
    check_searches([], "generation 0", tmp_path / "results.json", tmp_path)


def test_every_failed_search_stops_the_run_with_the_first_cause_on_one_line(tmp_path: Path) -> None:
    record = tmp_path / "gen-3" / "results.json"
    with pytest.raises(RunFailedError) as raised:
        check_searches([_failed(0), _failed(1, "MemoryError")], "generation 3", record, tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("every search of generation 3 failed: RuntimeError: injected fault (always) ")
    assert str(record) in message and f"autospace resume {tmp_path}" in message
    with pytest.raises(RunFailedError, match="^the final search failed: RuntimeError: injected fault"):
        check_searches([_failed(0)], "the final search", record, tmp_path)


def test_an_input_error_stops_the_run_even_when_other_searches_succeed(tmp_path: Path) -> None:
    error = "CheckpointError: search checkpoint /r/gen-0/space-1/search.pt cannot be read (x); delete it"
    with pytest.raises(SearchInputError) as raised:
        check_searches([_ok(0), _failed(1, error, input_error=True)], "generation 0", tmp_path / "r.json", tmp_path)
    assert str(raised.value) == f"generation 0, space 1: {error}; then `autospace resume {tmp_path}`"


def test_cause_is_the_last_line() -> None:
    assert cause(RAY_ERROR) == "RuntimeError: injected fault (always)"
    assert cause("one line") == "one line" and cause("") == ""


def test_results_written_before_input_errors_existed_still_load() -> None:
    old = {"index": 0, "ok": False, "result": None, "error": "boom", "wall_seconds": 1.0, "attempts": 2}
    assert SpaceEvaluation.from_dict(old).input_error is False
