"""A real 2-node Ray cluster on this machine: trials spread over both nodes, a worker node lost mid-generation,
and a whole cluster lost with its driver, restarted, and the run resumed.

One run serves the first two tests (slow, ~3 min): a head and a worker node of 1
CPU each (``ray start``, :mod:`tests.ray_nodes`), two generations of two 1-worker
searches with ``--set ray.address=127.0.0.1:P``. Generation 0 runs undisturbed;
in generation 1 the worker node's raylet is SIGKILLed once
its search has a checkpoint, and the run must still finish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from mlflow import MlflowClient

from pipeline.placement import read_placements
from tests.pipeline.test_pipeline_e2e import _write_config
from tests.ray_nodes import REPO, LocalRayCluster

pytestmark = pytest.mark.slow

EPOCHS = 6  # long enough that the worker node's search is still running when it is killed


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[LocalRayCluster]:
    """A head and one worker node, 1 CPU each, stopped (only they) at the end."""
    cluster = LocalRayCluster()
    try:
        yield cluster.start(workers=1)
    finally:
        cluster.stop()


def _config(tmp_path: Path, data: Path) -> Path:
    """The e2e tests' tiny run, with 1 full CPU per worker (one trial per node) and one Train retry."""
    return _write_config(tmp_path, data,
                         search=f"{{epochs: {EPOCHS}, warmup_epochs: 1, batch_size: 32, finetune_epochs: 0}}",
                         ray="{workers_per_trial: 1, cpus_per_worker: 1, max_failures: 1}")


def _lost_search(gen_dir: Path, worker_node: str) -> Path | None:
    """The space directory whose search runs on the worker node and has saved a checkpoint, if any yet."""
    for space_dir in sorted(gen_dir.glob("space-*")):
        placements = read_placements(space_dir)
        if placements and placements[-1][0]["node_id"] == worker_node and (space_dir / "search.pt").exists():
            return space_dir
    return None


@pytest.fixture(scope="module")
def lost_node_run(two_nodes: LocalRayCluster, tiny_dataset: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The run on the 2-node cluster, the worker node killed mid-generation 1; what the test needs of it."""
    tmp_path = tmp_path_factory.mktemp("multinode")
    started = time.monotonic()
    cli = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(_config(tmp_path,
                            tiny_dataset)), "--set", f"ray.address={two_nodes.address}"], cwd=REPO,
                           env=two_nodes.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    worker = two_nodes.nodes[1]
    gen_1 = tmp_path / "run" / "generations" / "gen-1"
    try:
        deadline = time.monotonic() + 600
        while (lost := _lost_search(gen_1, worker.node_id)) is None:
            assert cli.poll() is None, cli.communicate()[0][-4000:]
            assert time.monotonic() < deadline, "generation 1 never ran a search on the worker node"
            time.sleep(0.1)
        killed_at = time.time()
        os.kill(worker.raylet_pid(), signal.SIGKILL)
        out, _ = cli.communicate(timeout=600)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
    assert cli.returncode == 0, out[-4000:]
    return {"run": tmp_path / "run", "out": out, "lost": lost, "killed_at": killed_at,
            "seconds": time.monotonic() - started}


def _results(run: Path, generation: int) -> list[dict[str, Any]]:
    return json.loads((run / "generations" / f"gen-{generation}" / "results.json").read_text())


def test_a_run_on_two_nodes_spreads_its_trials_and_says_where_each_ran(
        two_nodes: LocalRayCluster, lost_node_run: dict[str, Any]) -> None:
    run = lost_node_run["run"]
    head, worker = two_nodes.head.node_id, two_nodes.nodes[1].node_id
    assert "ray: joined the cluster at " in lost_node_run["out"] and "2 CPUs on 2 nodes" in lost_node_run["out"]
    generation_0 = _results(run, 0)
    assert all(e["ok"] and e["attempts"] == 1 for e in generation_0)
    # one CPU per node and one 1-CPU worker per search: a search runs on the head or the worker node. Which
    # ones varies: a slot whose worker group starts first may search both spaces before the other starts.
    where_0 = sorted(e["placements"][0][0]["node_id"] for e in generation_0)
    assert set(where_0) <= {head, worker}
    nodes = {n["node_id"]: n for n in json.loads((run / "summary.json").read_text())["nodes"]}
    assert set(nodes) == {head, worker} and nodes[worker]["trials"] >= 1 and nodes[head]["trials"] >= 1
    assert sum(n["trials"] for n in nodes.values()) == 5  # 2 generations of 2 searches and the final search
    status = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", str(run), "--json"], cwd=REPO,
                            env=two_nodes.env, capture_output=True, text=True, check=True)
    assert json.loads(status.stdout)["nodes"] == list(nodes.values())
    client = MlflowClient(json.loads((run / "run.json").read_text())["tracking_uri"])
    spaces = client.search_runs([json.loads((run / "run.json").read_text())["experiment_id"]],
                                "tags.`autospace.kind` = 'space' and tags.`autospace.generation` = '0'")
    assert sorted(r.data.tags["autospace.node_id"] for r in spaces) == where_0


def test_a_worker_node_lost_mid_generation_costs_only_a_retry_on_the_node_left(
        two_nodes: LocalRayCluster, lost_node_run: dict[str, Any]) -> None:
    run, lost = lost_node_run["run"], lost_node_run["lost"]
    head, worker = two_nodes.head.node_id, two_nodes.nodes[1].node_id
    assert two_nodes.nodes[1].process.poll() is not None  # the worker node is gone for good
    generation_1 = _results(run, 1)
    assert all(e["ok"] for e in generation_1), [e["error"] for e in generation_1]
    retried = generation_1[int(lost.name.removeprefix("space-"))]
    # lost on the worker node, restarted by Ray Train on the head from the search checkpoint left behind
    assert [[w["node_id"] for w in p] for p in retried["placements"]] == [[worker], [head]]
    assert retried["attempts"] == 2 and len(retried["result"]["history"]) == EPOCHS
    final = json.loads((run / "final" / "results.json").read_text())[0]
    assert final["ok"] and final["placements"] == [[final["placements"][0][0]]]
    assert final["placements"][0][0]["node_id"] == head
    info = json.loads((run / "run.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    runs = client.search_runs([info["experiment_id"]], max_results=1000)
    generations = [r.data.tags["autospace.generation"] for r in runs if r.data.tags.get("autospace.kind") ==
                   "generation"]
    assert sorted(generations) == ["0", "1"]  # every generation logged once
    assert client.get_run(info["parent_run_id"]).info.status == "FINISHED"
    [space_run] = [r for r in runs if r.data.tags.get("autospace.kind") == "space"
                   and r.data.tags["autospace.generation"] == "1" and r.data.tags["autospace.space"] ==
                   str(retried["index"])]
    assert space_run.data.tags["autospace.attempt_nodes"] == f"{worker},{head}"
    assert space_run.data.tags["autospace.node_id"] == head


def test_a_run_whose_cluster_and_driver_died_resumes_on_a_cluster_restarted_at_a_new_address(
        tiny_dataset: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, tiny_dataset)
    config.write_text(config.read_text().replace("generations: 2", "generations: 1"))
    run, gen_0 = tmp_path / "run", tmp_path / "run" / "generations" / "gen-0"
    first = LocalRayCluster().start(workers=1)
    try:
        cli = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(config), "--set",
                                f"ray.address={first.address}"], cwd=REPO, env=first.env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        while not any(gen_0.glob("space-*/search.pt")):  # an epoch in, mid-generation
            assert cli.poll() is None and time.monotonic() < deadline, "generation 0 never saved a checkpoint"
            time.sleep(0.1)
        os.killpg(cli.pid, signal.SIGKILL)  # the driver...
        cli.wait()
    finally:
        first.stop()  # ...and every node of its cluster
    assert not (run / "evolution.json").exists()

    second = LocalRayCluster().start(workers=1)  # `ray up` again: new nodes, the head at another port
    try:
        resumed = subprocess.run([sys.executable, "-m", "pipeline.cli", "resume", str(run), "--ray-address",
                                  second.address], cwd=REPO, env=second.env, capture_output=True, text=True,
                                 timeout=600)
    finally:
        second.stop()
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"ray.address: {first.address} -> {second.address}" in resumed.stdout
    assert "2 CPUs on 2 nodes" in resumed.stdout
    evaluations = _results(run, 0)
    assert all(e["ok"] for e in evaluations)
    restarted = {second.head.node_id, second.nodes[1].node_id}
    for evaluation in evaluations:  # this call's attempts ran on the restarted cluster's nodes
        assert {w["node_id"] for p in evaluation["placements"] for w in p} <= restarted
    # the searches interrupted on the first cluster were started there, then once more on the second
    earlier = [read_placements(gen_0 / f"space-{e['index']}")[:-len(e["placements"])] for e in evaluations]
    assert any(earlier) and all(w["node_id"] not in restarted for p in sum(earlier, []) for w in p)
    info = json.loads((run / "run.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    runs = client.search_runs([info["experiment_id"]], "tags.`autospace.kind` = 'generation'")
    assert [r.data.tags["autospace.generation"] for r in runs] == ["0"]
    assert client.get_run(info["parent_run_id"]).info.status == "FINISHED"
