"""A real multi-node Ray cluster on this machine, started with ``ray start``, for slow tests.

Each node is one ``ray start --block`` process in its own process group with its
own temp dir and CPUs, so the test can stop exactly the nodes it started (``ray
stop`` would stop every Ray of this user: other runs on a shared machine too) and
kill one node's raylet to lose that node. The commands are the ones
``docs/cluster.md`` gives for a real cluster, on 127.0.0.1 with explicit ports.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RayNode", "LocalRayCluster", "free_port"]

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
_NODES = """
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print(json.dumps([[n["NodeID"], "node:__internal_head__" in n["Resources"]] for n in ray.nodes() if n["Alive"]]))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RayNode:
    process: subprocess.Popen
    temp: Path
    node_id: str = ""

    def raylet_pid(self) -> int:
        """The pid of this node's raylet: the process named ``raylet`` in this node's process group."""
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if (entry / "comm").read_text().strip() == "raylet" and os.getpgid(int(entry.name)) == \
                            self.process.pid:
                        return int(entry.name)
                except (OSError, ProcessLookupError):
                    continue
        raise LookupError(f"no raylet in the process group of node {self.node_id or self.temp}")


class LocalRayCluster:
    """A head node plus worker nodes (``ray start``), each with ``cpus`` CPUs; :meth:`stop` ends them all.

    The environment turns token authentication off (test-only) and makes the GCS
    declare a silent node dead after ~3 s instead of ~15 s, so node-loss tests do
    not wait on Ray's production health-check defaults.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO),
                    "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
        self.nodes: list[RayNode] = []
        self.gcs_address = ""

    def start(self, workers: int, cpus: int = 1, timeout: float = 180) -> LocalRayCluster:
        """Start the head, then ``workers`` worker nodes; return once all are alive, their node ids known."""
        self._start_node(["--head", "--port", str(self.port), "--include-dashboard=false",
                          "--disable-usage-stats"], cpus)
        for _ in range(workers):
            self._start_node(["--address", self.address], cpus)
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                assert node.process.poll() is None, f"ray start exited with {node.process.returncode}"
            found = subprocess.run([sys.executable, "-c", _NODES, self.address], env=self.env, capture_output=True,
                                   text=True, timeout=timeout)
            alive = json.loads(found.stdout.strip().splitlines()[-1]) if found.returncode == 0 else []
            if len(alive) == len(self.nodes):
                break
            assert time.monotonic() < deadline, f"only {len(alive)} of {len(self.nodes)} Ray nodes came up"
            time.sleep(1)
        self.head.node_id = next(node_id for node_id, head in alive if head)
        # what Ray calls the head: 127.0.0.1 is rewritten to the machine's routable address (pipeline/cluster.py)
        self.gcs_address = (self.head.temp / "ray_current_cluster").read_text().strip()
        others = iter(node_id for node_id, head in alive if not head)
        for node in self.nodes[1:]:  # one worker in the tests that need its id; with more, any order
            node.node_id = next(others)
        return self

    @property
    def head(self) -> RayNode:
        return self.nodes[0]

    def _start_node(self, args: list[str], cpus: int) -> None:
        temp = Path(tempfile.mkdtemp(prefix="rn-", dir="/tmp"))  # short: Ray's socket paths have a length limit
        process = subprocess.Popen([str(RAY), "start", *args, "--num-cpus", str(cpus), "--temp-dir", str(temp),
                                    "--block"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        self.nodes.append(RayNode(process, temp))

    def stop(self) -> None:
        """End every node this cluster started (its whole process group), worker nodes first."""
        for node in reversed(self.nodes):
            _stop_group(node.process)
            shutil.rmtree(node.temp, ignore_errors=True)


def _stop_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:  # `ray start --block` can outlive its children's SIGTERM
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # whatever of the group is left (workers, GCS)
    except ProcessLookupError:
        pass
    process.wait()
