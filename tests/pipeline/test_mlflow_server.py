"""Runs and the registry against a live MLflow tracking server (slow): what a team's shared server sees.

One ``mlflow server`` (SQLite backend, ``--artifacts-destination``: clients upload
artifacts through HTTP) serves every test here: two pipeline runs at once, one
going all the way to a registered, promoted model; trackers starting at once on a
new experiment; and promotions racing on one registered model from two processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
from mlflow import MlflowClient

from deploy.registry import CHAMPION, load_registered, register_model
from deploy.registry import test_split_id as split_id  # a test_* name would be collected by pytest
from pipeline.config import load_config
from pipeline.data import load_dataset
from pipeline.tracking import Tracker
from tests.deploy.test_registry import ARCH, exported  # noqa: F401  (exported: a fixture, used by name)
from tests.mlflow_server import mlflow_server
from tests.pipeline.test_pipeline_e2e import _cli, _finish, _write_config
from tests.ray_nodes import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A live server on 127.0.0.1: its URL and the folder its artifacts land in."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(f"sqlite:///{root / 'server.db'}", root / "artifacts") as url:
        yield url, root / "artifacts"


def test_trackers_starting_at_once_share_one_new_experiment(server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = server
    config = load_config(None, [f"mlflow.tracking_uri={url}", "mlflow.experiment=started-at-once"])
    with ThreadPoolExecutor(4) as pool:  # each looks the experiment up, finds none, and creates it
        trackers = list(pool.map(lambda i: Tracker(config.model_copy(update={"out_dir": tmp_path / str(i)})),
                                 range(4)))
    assert len({t.experiment_id for t in trackers}) == 1 and len({t.parent_run_id for t in trackers}) == 4


# ---- two pipeline runs at once through the server ------------------------------------------------
@pytest.fixture(scope="module")
def two_runs(server: tuple[str, Path], tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two runs started together against the server: one to a registered champion, one evolution only."""
    url, _ = server
    configs = [_write_config(tmp_path_factory.mktemp("deployed"), tiny_dataset, generations=1, deploy=True),
               _write_config(tmp_path_factory.mktemp("evolved"), tiny_dataset, generations=1)]
    runs = [_cli("run", "--config", str(config), "--set", f"mlflow.tracking_uri={url}") for config in configs]
    for run in runs:
        _finish(run)
    return [config.parent / "run" for config in configs]


def _tree(client: MlflowClient, run_dir: Path) -> dict[str, Any]:
    """A run directory's MLflow parent run and its children, found through the server by the parent's id."""
    info = json.loads((run_dir / "run.json").read_text())
    runs = client.search_runs([info["experiment_id"]], max_results=1000)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == info["parent_run_id"]]
    return {"parent": client.get_run(info["parent_run_id"]), "children": children, "all": runs, **info}


def test_a_run_logs_nested_runs_artifacts_and_a_registered_champion_through_the_server(
        server: tuple[str, Path], two_runs: list[Path]) -> None:
    url, artifacts = server
    run = two_runs[0]
    client = MlflowClient(url)
    tree = _tree(client, run)
    assert tree["tracking_uri"] == url and tree["parent"].info.status == "FINISHED"
    # artifacts went up through the server's proxy into its destination, none into the run directory
    assert tree["parent"].info.artifact_uri.startswith("mlflow-artifacts:/")
    assert {"summary.json", "report.html", "pareto.png", "deploy.json"} <= \
        {a.path for a in client.list_artifacts(tree["parent"].info.run_id)}
    uploaded = list(artifacts.rglob(f"{tree['parent'].info.run_id}/artifacts/summary.json"))
    assert [json.loads(p.read_text()) for p in uploaded] == [json.loads((run / "summary.json").read_text())]
    assert not (run / "mlartifacts").exists() and not (run / "mlflow.db").exists()
    # nested: parent -> generation -> 2 spaces; parent -> the retrained model's run
    kinds = sorted(r.data.tags["autospace.kind"] for r in tree["children"])
    assert kinds == ["generation", "retrain"]
    [generation] = [r for r in tree["children"] if r.data.tags["autospace.kind"] == "generation"]
    spaces = [r for r in tree["all"] if r.data.tags.get("mlflow.parentRunId") == generation.info.run_id]
    assert len(spaces) == 2 and all(r.info.status == "FINISHED" for r in spaces)
    assert all({"derived_arch.json", "space.json"} <= {a.path for a in client.list_artifacts(r.info.run_id)}
               for r in spaces)
    # the registry: the version the run registered and promoted, loadable back through the server
    [model] = json.loads((run / "deploy.json").read_text())["models"]
    assert str(client.get_model_version_by_alias("autospace-model", CHAMPION).version) == str(model["version"])
    session, metadata = load_registered(url, "models:/autospace-model@champion")
    assert metadata["arch"] == model["arch"] and session.get_inputs()[0].shape[1:] == metadata["input_shape"]


def test_two_runs_at_once_keep_their_runs_apart(server: tuple[str, Path], two_runs: list[Path],
                                                tmp_path: Path) -> None:
    client = MlflowClient(server[0])
    deployed, evolved = (_tree(client, run) for run in two_runs)
    assert deployed["experiment_id"] == evolved["experiment_id"]  # one experiment, created once
    assert deployed["parent_run_id"] != evolved["parent_run_id"]
    assert sorted(r.data.tags["autospace.kind"] for r in evolved["children"]) == ["generation"]
    assert evolved["parent"].data.tags["autospace.best_arch"] == \
        json.loads((two_runs[1] / "summary.json").read_text())["best"]["arch"]
    for tree, run in ((deployed, two_runs[0]), (evolved, two_runs[1])):
        [generation] = [r for r in tree["children"] if r.data.tags["autospace.kind"] == "generation"]
        (into := tmp_path / run.parent.name).mkdir()
        report = Path(client.download_artifacts(generation.info.run_id, "report.json", str(into)))
        assert json.loads(report.read_text()) == json.loads((run / "evolution.json").read_text())["history"][0]


# ---- promotions racing on one registered model -------------------------------------------------
ROUNDS = 3
_PROMOTE = """
import sys, time
from pathlib import Path
from deploy.registry import promote_if_better

uri, version, log, go = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
Path(f"{go}.ready-{version}").touch()
while not go.exists():
    time.sleep(0.01)
start = float(go.read_text())
for n in range(int(sys.argv[5])):
    time.sleep(max(0.0, start + 2 * n - time.time()))  # both processes promote at the same instant
    promote_if_better(uri, f"race-{n}", version, budget_metric="madds", budget_target=1e9, log_path=log)
    print(f"promoter {version} round {n}: decided {time.time() - start - 2 * n:.3f} s after the start", flush=True)
"""


def test_racing_promotions_end_with_one_consistent_champion_and_both_decisions_logged(
        server: tuple[str, Path], exported: dict[str, Path], tiny_dataset: Path, tmp_path: Path) -> None:
    url, _ = server
    example = load_dataset(tiny_dataset).split("test", normalize=False)[0][:2].numpy()
    for n in range(ROUNDS):  # each round: v1 (accuracy 0.8) and v2 (0.9), neither champion yet
        for accuracy in (0.8, 0.9):
            register_model(url, f"race-{n}", exported["onnx"], arch=ARCH, classes=["a", "b", "c", "d"],
                           metrics={"test_accuracy": accuracy}, input_example=example,
                           test_split=split_id(tiny_dataset))
    log = tmp_path / "promotions.jsonl"
    go = tmp_path / "go"
    promoters = [subprocess.Popen([sys.executable, "-c", _PROMOTE, url, version, str(log), str(go), str(ROUNDS)],
                                  cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": ""}) for version in ("1", "2")]
    deadline = time.monotonic() + 120
    while not all(Path(f"{go}.ready-{version}").exists() for version in ("1", "2")):  # both imported MLflow
        assert time.monotonic() < deadline and all(p.poll() is None for p in promoters), "a promoter did not start"
        time.sleep(0.1)
    go.write_text(str(time.time() + 1))
    assert [p.wait(timeout=180) for p in promoters] == [0, 0]
    decisions = [json.loads(line) for line in log.read_text().splitlines()]
    client = MlflowClient(url)
    for n in range(ROUNDS):
        name = f"race-{n}"
        first, second = sorted((d for d in decisions if d["name"] == name), key=lambda d: d["champion_version"]
                               is not None)  # both decisions logged; the one that decided first saw no champion
        assert (first["champion_version"], first["decision"]) == (None, "promoted"), (first, second)
        # the second decided against the first's outcome: the better v2 replaced v1, or v1 was kept under v2
        assert second["champion_version"] == first["version"], (first, second)
        assert second["decision"] == ("promoted" if second["version"] == "2" else "kept")
        assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "2"
        for decision in (first, second):
            tags = client.get_model_version(name, decision["version"]).tags
            assert tags["promotion_decision"] == decision["decision"]
        assert [m.name for m in client.search_registered_models(f"name LIKE '{name}%'")] == [name]  # no lock left
