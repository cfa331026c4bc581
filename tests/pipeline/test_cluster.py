"""Ray addressing and the shared Ray Train set-up (pipeline/cluster.py), on real Ray clusters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from pipeline.cluster import LOCAL, fail_once, init_address, worker_groups_that_fit
from pipeline.config import ConfigError
from pipeline.run_dir import read_run_config, set_ray_address
from tests.pipeline.test_pipeline_e2e import _write_config
from tests.ray_nodes import REPO, LocalRayCluster, free_port


def test_a_null_address_means_a_ray_of_our_own_and_joining_is_only_on_request() -> None:
    assert init_address(None) == LOCAL == "local"  # ray.init(address=None) would join `ray start`'s cluster
    assert init_address(LOCAL) == LOCAL  # `resume --ray-address local`, or written in a config
    assert init_address("auto") == "auto"
    assert init_address("10.0.0.5:6379") == "10.0.0.5:6379"
    assert init_address("ray://head:10001") == "ray://head:10001"


def test_fail_once_fails_the_first_attempt_only(tmp_path: Path) -> None:
    marker = tmp_path / "fault-injected"
    with pytest.raises(RuntimeError, match="^injected fault$"):
        fail_once(marker)
    assert marker.exists()
    fail_once(marker)  # the retry goes through


def test_groups_that_fit_count_and_refuse_a_group_larger_than_the_cluster(ray_cluster: dict[str, float]) -> None:
    assert ray_cluster["CPU"] == 2
    assert worker_groups_that_fit("one trial", 1, 0.45, "ray.workers_per_trial") == 4
    assert worker_groups_that_fit("one trial", 2, 1.0, "ray.workers_per_trial") == 1
    with pytest.raises(ConfigError, match=r"^the final training needs retrain.workers x ray.cpus_per_worker = "
                                          r"3 x 1.0 = 3 CPUs but the Ray cluster has 2; lower either setting$"):
        worker_groups_that_fit("the final training", 3, 1.0, "retrain.workers")


def test_an_address_where_no_cluster_answers_fails_at_once_and_resume_can_point_the_run_elsewhere(
        tiny_dataset: Path, tmp_path: Path) -> None:
    """``ray.init`` would retry a dead address for minutes; the CLI says what is wrong and how to fix it."""
    dead, other = free_port(), free_port()
    config = _write_config(tmp_path, tiny_dataset, ray=f"{{address: '127.0.0.1:{dead}'}}")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=120)

    started = cli("run", "--config", str(config))
    assert started.returncode != 0
    assert f"no Ray cluster answers at ray.address=127.0.0.1:{dead}" in started.stderr
    assert "autospace resume RUN --ray-address HOST:PORT" in started.stderr
    run = tmp_path / "run"
    resumed = cli("resume", str(run), "--ray-address", f"127.0.0.1:{other}")
    assert resumed.returncode != 0 and "ray.address:" not in resumed.stdout
    assert f"no Ray cluster answers at ray.address=127.0.0.1:{other}" in resumed.stderr
    assert read_run_config(run).ray.address == f"127.0.0.1:{dead}"  # a wrong address is not saved
    malformed = cli("resume", str(run), "--ray-address", "head-node")
    assert "ray.address='head-node' is not HOST:PORT, ray://HOST:PORT or auto" in malformed.stderr
    assert set_ray_address(run, f"127.0.0.1:{other}") == f"127.0.0.1:{dead}"  # what a reachable one saves
    assert read_run_config(run).ray.address == f"127.0.0.1:{other}"  # so later resumes go there too
    assert set_ray_address(run, None) == f"127.0.0.1:{other}"  # what `--ray-address local` saves
    assert read_run_config(run).ray.address is None


# ---- a real `ray start` cluster on this machine (slow) ---------------------------------------
_PROBE = """
import json, sys
import ray
from pipeline.cluster import ensure_ray
from pipeline.config import load_config

line = ensure_ray(load_config(None, sys.argv[1:]))
print(json.dumps({"line": line, "gcs": ray.get_runtime_context().gcs_address,
                  "cpus": ray.cluster_resources().get("CPU"), "nodes": len(ray.nodes())}))
ray.shutdown()
"""


@pytest.fixture
def started_cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """A 1-CPU head started with ``ray start``; yields its address and an environment that points at it.

    Its temp dir is private, so no other ``ray.init()`` on this shared machine finds it;
    the environment's ``RAY_ADDRESS`` makes it this test's "current cluster" instead,
    the way ``ray start`` makes it the machine's. Teardown stops only this head
    (``ray stop`` would stop every Ray of this user).
    """
    cluster = LocalRayCluster()
    try:
        cluster.start(workers=0)
        yield cluster.gcs_address, {**cluster.env, "RAY_ADDRESS": cluster.gcs_address}
    finally:
        cluster.stop()


def _probe(env: dict[str, str], *overrides: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, *overrides], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=180, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_local_run_never_joins_a_running_cluster_and_auto_does_and_says_so(
        started_cluster: tuple[str, dict[str, str]]) -> None:
    address, env = started_cluster
    local = _probe(env, "ray.num_cpus=2")
    assert local["gcs"] != address and local["line"] is None  # a fresh Ray of its own, silently
    assert (local["cpus"], local["nodes"]) == (2, 1)

    joined = _probe(env, "ray.address=auto")
    assert joined["gcs"] == address and joined["cpus"] == 1
    assert joined["line"] == f"ray: joined the cluster at {address} (ray.address=auto): 1 CPU on 1 node"
