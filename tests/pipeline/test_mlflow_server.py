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

from deploy.registry import CHAMPION, register_model
from deploy.registry import test_split_id as split_id  # a test_* name would be collected by pytest
from pipeline.config import load_config
from pipeline.data import load_dataset
from pipeline.tracking import Tracker
from tests.deploy.test_registry import ARCH, exported  # noqa: F401  (exported: a fixture, used by name)
from tests.mlflow_server import mlflow_server
from tests.pipeline.test_pipeline_e2e import _cli, _write_config
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
