"""The one place a cost on the budget metric is read: architectures, search results and export reports."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from spaces.budget import budget_cost, measured_latency, recorded_cost
from spaces.cost import arch_cost
from spaces.reference import reference_arch
from spaces.search import DERIVED_FIELDS, SearchResult

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "quickstart-run"


def _fixture_results() -> list[dict]:
    entries = [e for path in sorted(FIXTURE.glob("generations/gen-*/results.json"))
               for e in json.loads(path.read_text())]
    return [e["result"] for e in entries if e["ok"]] + [json.loads((FIXTURE / "summary.json").read_text())
                                                        ["final_search"]]


def test_a_saved_search_result_reads_back_to_the_same_record() -> None:
    results = _fixture_results()
    assert len(results) > 1
    for data in results:
        result = SearchResult.from_dict(data)
        assert json.loads(json.dumps(result.to_dict())) == data
        assert tuple(result.derived()) == DERIVED_FIELDS
        assert result.cell_effects is not None and result.candidates and result.choice is not None


def test_the_cost_on_each_metric_is_read_from_one_mapping() -> None:
    result = SearchResult.from_dict(_fixture_results()[0])
    assert result.cost_on("madds") == result.cost.madds == recorded_cost(result.to_dict(), "madds")
    assert result.cost_on("params") == result.cost.params
    assert result.cost_on("latency") == result.predicted_latency_ms
    with pytest.raises(ValueError, match="lacks 'predicted_latency_ms'.*latency table"):
        replace(result, predicted_latency_ms=None).cost_on("latency")
    with pytest.raises(ValueError, match="'flops' is not one of madds, params, latency"):
        result.cost_on("flops")
    arch = reference_arch(1, 28, 10)
    assert budget_cost(arch, "params") == arch_cost(arch).params


def test_measured_latency_is_the_budget_batch_of_the_runtime() -> None:
    report = {"torch": {"1": 0.5, "32": 4.0}, "onnxruntime": {"1": 0.25}}
    assert measured_latency(report, "torch") == 0.5 and measured_latency(report, "onnxruntime") == 0.25
    assert measured_latency(report, "tensorrt") is None
