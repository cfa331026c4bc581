"""MLflow conventions on a real SQLite store: the experiment's kind, search curves as metric histories, the UI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.config import load_config
from pipeline.ray_eval import SpaceEvaluation
from pipeline.run_tables import experiment_page
from pipeline.tracking import CURVES, KIND, KIND_TAG, Tracker
from spaces.search import SearchResult
from tests.mlflow_server import mlflow_server

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "quickstart-run"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _tracker(out: Path) -> Tracker:
    return Tracker(load_config(None, []).model_copy(update={"out_dir": out}))


def test_a_new_experiment_is_a_model_training_one_and_a_set_kind_is_kept(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path / "a")
    assert tracker.client.get_experiment(tracker.experiment_id).tags[KIND_TAG] == KIND
    # an experiment someone made without a kind gets it; one whose kind was chosen keeps it
    (tmp_path / "b").mkdir()
    client = MlflowClient(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}")
    untagged = client.create_experiment("autospace")
    assert KIND_TAG not in client.get_experiment(untagged).tags
    assert _tracker(tmp_path / "b").experiment_id == untagged
    assert client.get_experiment(untagged).tags[KIND_TAG] == KIND
    client.set_experiment_tag(untagged, KIND_TAG, "genai_development")
    _tracker(tmp_path / "b")
    assert client.get_experiment(untagged).tags[KIND_TAG] == "genai_development"


def _log_fixture_generation(tracker: Tracker) -> tuple[list[SearchResult], list[str]]:
    """Generation 0 of the real quick-start run logged through the tracker; its results and space run ids."""
    report = json.loads((FIXTURE / "evolution.json").read_text())["history"][0]
    gen = FIXTURE / "generations" / "gen-0"
    spaces = json.loads((gen / "spaces.json").read_text())
    results = [SpaceEvaluation.from_dict(e).result for e in json.loads((gen / "results.json").read_text())]
    assert tracker.log_generation(report, spaces, results, {"format": "autospace-evolution/1"})
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.`autospace.kind` = 'space'")
    runs = sorted(runs, key=lambda r: int(r.data.tags["autospace.space"]))
    return results, [r.info.run_id for r in runs]


def test_per_epoch_search_curves_are_metric_histories(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)
    results, run_ids = _log_fixture_generation(tracker)
    assert len(run_ids) == len(results) == 2
    for result, run_id in zip(results, run_ids):
        history = result.history
        assert len(history) >= 2
        for key in CURVES:
            logged = sorted(tracker.client.get_metric_history(run_id, f"search_{key}"), key=lambda m: m.step)
            expected = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
            assert [m.step for m in logged] == [step for step, _ in expected]
            assert [m.value for m in logged] == pytest.approx([value for _, value in expected])
        # the run's single-valued metrics are untouched by the curves
        assert tracker.client.get_run(run_id).data.metrics["val_accuracy"] == pytest.approx(result.val_accuracy)
    # logging is still exactly once per generation
    assert not tracker.log_generation(json.loads((FIXTURE / "evolution.json").read_text())["history"][0], [], [], {})


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (scripts/setup.sh installs it where apt "
                                              "exists)")
def test_the_printed_ui_address_opens_on_the_training_runs(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path)
    _log_fixture_generation(tracker)
    tracker.client.set_tag(tracker.parent_run_id, "mlflow.runName", "ui-check-run")
    with mlflow_server(tracker.uri) as base:
        dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              "--virtual-time-budget=20000", "--window-size=1400,1000", "--dump-dom",
                              experiment_page(tracker.experiment_id, base)],
                             capture_output=True, text=True, timeout=180).stdout
        assert ">Runs<" in dom and "ui-check-run" in dom  # the runs table, with the pipeline's parent run
