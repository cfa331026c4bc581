"""Where the Ray work runs: starting or joining Ray, its capacity, the Train set-up both stages share.

Addressing. ``ray.address: null`` (the default) starts a fresh local Ray of this
process's own (``ray.init(address="local")``): a plain ``ray.init()`` would join
whatever cluster ``ray start`` left on the machine (or ``RAY_ADDRESS`` names), so
a "local" run could land on a shared, busy cluster without a word. Joining an
existing cluster happens only when asked, ``auto`` (the machine's current cluster)
or an address, and :func:`ensure_ray` then says which cluster it joined. An
address where nothing answers fails in seconds with the fix (``ray.init`` would
retry it for minutes): a cluster restarted elsewhere is resumed with
``autospace resume RUN --ray-address HOST:PORT``.

Listening addresses. Ray's GCS, raylet and worker gRPC servers listen on
127.0.0.1 only when the node's address is 127.0.0.1, and on every interface
otherwise. A local Ray gets that address from Ray's own local-only mode (its
default on macOS and Windows, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), which
Ray reads when it is imported; :func:`ensure_ray` switches it on in this process
just for the ``ray.init`` that starts the local Ray (``_node_ip_address="127.0.0.1"``
alone is rewritten to the routable address). Joining a cluster is left as it is.
Ray's token authentication stays on by default: do not set ``RAY_AUTH_MODE=disabled``
outside tests.

Node loss. The run's orchestration (the evolution actor, and a search trial
function that runs a Train job, with its Train controller, which Ray puts on its
caller's node) is pinned to the head node with :data:`ON_HEAD`; only work that
reserves CPUs goes elsewhere: Train workers, and the one-worker search trials, which search in their own process
(:mod:`pipeline.ray_eval`). Losing the head loses the cluster whatever runs
there, so this way a lost worker node only costs the workers it held, which Ray
Train (a worker group) or Tune (a one-worker trial) restarts on the nodes left
(``ray.max_failures``), from their checkpoints. Left to Ray's default
scheduling, the zero-CPU actors may land on any node, and losing that node
failed its trials outright, or the whole run.

Train set-up. The evolution's searches (:mod:`pipeline.ray_eval`) and the deploy
stage's final training (:mod:`deploy.retrain`) run the same kind of job: a gloo
``TorchTrainer`` of N workers with fixed CPUs each, retried by Ray Train only
(:func:`torch_trainer`), checked to fit the cluster first (:func:`worker_groups_that_fit`),
with the same one-shot fault injection for drills (:func:`fail_once`).
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any, Callable

import ray
from ray import train
from ray._private import ray_constants
from ray.train.torch import TorchConfig, TorchTrainer

from pipeline.config import Config, ConfigError

__all__ = ["HEALTH_CHECK_ENV", "LOCAL", "ON_HEAD", "check_reachable", "ensure_ray", "fail_once", "init_address",
           "torch_trainer", "worker_groups_that_fit", "worker_threads"]

HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
LOCAL = "local"  # ray.init's address for "start a new local Ray, whatever else runs on the machine"
# A sliver of the resource only the head node has (Ray's HEAD_NODE_RESOURCE_NAME): "schedule this on the head".
ON_HEAD = {"node:__internal_head__": 0.001}
PROBE_SECONDS = 5.0  # how long a cluster's head may take to accept a connection


def init_address(address: str | None) -> str:
    """The ``ray.init`` address for a configured ``ray.address``: null (or ``local``) means a Ray of our own."""
    return LOCAL if address in (None, LOCAL) else address


def ensure_ray(config: Config) -> str | None:
    """Start a local Ray or join the configured cluster, unless Ray is already initialised.

    Train's health-check interval defaults to 0.2 s (Ray's 2 s adds ~2 s to every
    report and to noticing that a worker group finished); it is read by processes
    Ray starts, so it has to be in the environment before ``ray.init``.

    Returns:
        One line saying which cluster was joined and its size, for the user to see;
        None when a local Ray was started or Ray was already up.
    """
    if ray.is_initialized():
        return None
    os.environ.setdefault(HEALTH_CHECK_ENV, "0.2")
    address = init_address(config.ray.address)
    if address == LOCAL:
        clusters_enabled, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
        try:  # the node's address, so every server's, is 127.0.0.1 (module docstring)
            ray.init(address=LOCAL, num_cpus=config.ray.num_cpus, include_dashboard=False, log_to_driver=False)
        finally:
            ray_constants.ENABLE_RAY_CLUSTER = clusters_enabled
        return None
    check_reachable(address)
    ray.init(address=address, log_to_driver=False)
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    cpus = ray.cluster_resources().get("CPU", 0.0)
    return (f"ray: joined the cluster at {ray.get_runtime_context().gcs_address} (ray.address={address}): "
            f"{_count(cpus, 'CPU')} on {_count(nodes, 'node')}")


def check_reachable(address: str) -> None:
    """A ConfigError naming the fix when nothing listens at ``address`` (``auto`` and ``local`` are Ray's)."""
    if address in ("auto", LOCAL):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"ray.address={address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=PROBE_SECONDS).close()
    except OSError as err:
        raise ConfigError(f"no Ray cluster answers at ray.address={address} ({err.strerror or err}); start it "
                          f"(`ray start --head --port {port}`) or give the cluster's address: "
                          "--set ray.address=HOST:PORT for a new run, "
                          "`autospace resume RUN --ray-address HOST:PORT` for a run to resume") from None


def _count(n: float, noun: str) -> str:
    return f"{n:g} {noun}{'' if n == 1 else 's'}"


def worker_groups_that_fit(job: str, workers: int, cpus_per_worker: float, workers_field: str,
                           cpus_field: str = "ray.cpus_per_worker") -> int:
    """How many groups of ``workers`` x ``cpus_per_worker`` CPUs the Ray cluster holds at once.

    Raises:
        ConfigError: not even one group fits (its placement group would wait forever);
            the message names the ``job``, ``workers_field`` and ``cpus_field``.
    """
    per_group = workers * cpus_per_worker
    total = ray.cluster_resources().get("CPU", 0.0)
    fitting = math.floor(total / per_group + 1e-9)
    if fitting < 1:
        raise ConfigError(f"{job} needs {workers_field} x {cpus_field} = {workers} x {cpus_per_worker} = "
                          f"{per_group:g} CPUs but the Ray cluster has {total:g}; lower either setting")
    return fitting


def torch_trainer(worker: Callable[[dict[str, Any]], Any], loop_config: dict[str, Any], *, workers: int,
                  cpus_per_worker: float, storage: Path, name: str, max_failures: int) -> TorchTrainer:
    """A gloo ``TorchTrainer``: ``workers`` workers of ``cpus_per_worker`` CPUs, ``max_failures`` Train retries.

    ``loop_config["threads"]`` is set to the torch threads a worker's CPUs pay for
    (at least 1); the worker applies it with ``torch.set_num_threads``.
    """
    return TorchTrainer(
        worker,
        train_loop_config={**loop_config, "threads": worker_threads(cpus_per_worker)},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=train.ScalingConfig(num_workers=workers, resources_per_worker={"CPU": cpus_per_worker}),
        run_config=train.RunConfig(storage_path=str(storage), name=name,
                                   failure_config=train.FailureConfig(max_failures=max_failures)))


def worker_threads(cpus: float) -> int:
    """The torch threads a worker's ``cpus`` pay for: whole CPUs, at least 1."""
    return max(1, int(cpus))


def fail_once(marker: Path, message: str = "injected fault") -> None:
    """Raise ``RuntimeError(message)`` unless ``marker`` exists, creating it first: the retry then succeeds."""
    if not marker.exists():
        marker.touch()
        raise RuntimeError(message)
