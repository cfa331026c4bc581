"""Where the work went: placements read back from a run directory into MLflow tags, summary and status."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.ray_eval import SpaceEvaluation
from pipeline.placement import PLACEMENTS, format_nodes, node_summary, node_tags, read_placements, run_nodes
from pipeline.tracking import Tracker

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "quickstart-run"
HEAD = {"node_id": "a1" * 28, "host": "box", "ip": "10.0.0.5"}
WORKER = {"node_id": "b2" * 28, "host": "box", "ip": "10.0.0.5"}
OTHER = {"node_id": "c3" * 28, "host": "gpu-7", "ip": "10.0.0.9"}


def test_tags_name_the_resulting_attempts_rank_0_and_every_attempts_node() -> None:
    assert node_tags([]) == {}  # never started
    assert node_tags([[HEAD]]) == {"node_id": HEAD["node_id"], "node_host": "box", "node_ip": "10.0.0.5",
                                   "worker_nodes": HEAD["node_id"]}
    # lost on WORKER, retried with two ranks on HEAD and OTHER: rank 0 of the last attempt is where it ran
    tags = node_tags([[WORKER], [OTHER, HEAD, OTHER]])
    assert (tags["node_id"], tags["node_host"], tags["node_ip"]) == (OTHER["node_id"], "gpu-7", "10.0.0.9")
    assert tags["worker_nodes"] == f"{OTHER['node_id']},{HEAD['node_id']}"
    assert tags["attempt_nodes"] == f"{WORKER['node_id']},{OTHER['node_id']}"


def test_the_summary_counts_trials_by_their_resulting_attempt_and_every_attempt() -> None:
    nodes = node_summary([{"ok": True, "placements": [[HEAD]]},
                          {"ok": True, "placements": [[WORKER], [HEAD, HEAD]]},  # lost on WORKER, retried
                          {"ok": False, "placements": [[WORKER]]},  # failed there: an attempt, no trial
                          {"ok": True}])  # an evaluation from before placements were recorded
    assert nodes == [{**HEAD, "trials": 2, "attempts": 2}, {**WORKER, "trials": 0, "attempts": 2}]
    assert format_nodes(nodes) == ("2: a1a1a1a1 box (10.0.0.5) 2 trials; "
                                   "b2b2b2b2 box (10.0.0.5) 0 trials, 2 attempts")
    assert format_nodes([{**OTHER, "trials": 1, "attempts": 1}]) == "1: c3c3c3c3 gpu-7 (10.0.0.9) 1 trial"


def test_placements_are_read_line_by_line_from_a_space_directory(tmp_path: Path) -> None:
    assert read_placements(tmp_path) == []
    (tmp_path / PLACEMENTS).write_text(json.dumps([WORKER]) + "\n" + json.dumps([HEAD, OTHER]) + "\n")
    assert read_placements(tmp_path) == [[WORKER], [HEAD, OTHER]]


@pytest.fixture
def placed_run(tmp_path: Path) -> Path:
    """The real quick-start run, its searches placed: gen 0 on HEAD and WORKER, gen 1's space 1 lost on WORKER."""
    run = Path(shutil.copytree(FIXTURE, tmp_path / "run"))
    places = {0: [[[HEAD]], [[WORKER]]], 1: [[[HEAD]], [[WORKER], [HEAD]]]}
    for generation, placements in places.items():
        path = run / "generations" / f"gen-{generation}" / "results.json"
        records = json.loads(path.read_text())
        path.write_text(json.dumps([{**r, "placements": p} for r, p in zip(records, placements)]))
    return run


def test_status_and_its_json_say_which_nodes_ran_the_searches(placed_run: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert run_nodes(placed_run) == [{**HEAD, "trials": 3, "attempts": 3}, {**WORKER, "trials": 1, "attempts": 2}]
    assert main(["status", str(placed_run)]) == 0
    lines = dict(re.split(r" {2,}", line, maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert lines["nodes"] == "2: a1a1a1a1 box (10.0.0.5) 3 trials; b2b2b2b2 box (10.0.0.5) 1 trial, 2 attempts"
    assert main(["status", str(placed_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nodes"] == run_nodes(placed_run)
    assert main(["status", str(FIXTURE)]) == 0  # a run from before placements: no nodes line
    assert "nodes" not in capsys.readouterr().out


def test_each_space_run_in_mlflow_is_tagged_with_its_node(placed_run: Path, tmp_path: Path) -> None:
    tracker = Tracker(load_config(None, []).model_copy(update={"out_dir": tmp_path / "mlruns"}))
    report = json.loads((placed_run / "evolution.json").read_text())["history"][1]
    gen = placed_run / "generations" / "gen-1"
    evaluations = [SpaceEvaluation.from_dict(e) for e in json.loads((gen / "results.json").read_text())]
    assert tracker.log_generation(report, json.loads((gen / "spaces.json").read_text()),
                                  [e.result for e in evaluations], {}, [e.placements for e in evaluations])
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.`autospace.kind` = 'space'")
    tags = {int(r.data.tags["autospace.space"]): r.data.tags for r in runs}
    assert tags[0]["autospace.node_id"] == HEAD["node_id"] and "autospace.attempt_nodes" not in tags[0]
    assert (tags[1]["autospace.node_id"], tags[1]["autospace.node_host"], tags[1]["autospace.node_ip"]) == \
        (HEAD["node_id"], "box", "10.0.0.5")
    assert tags[1]["autospace.attempt_nodes"] == f"{WORKER['node_id']},{HEAD['node_id']}"
