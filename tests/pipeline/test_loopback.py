"""A local run's Ray listens on loopback only (pipeline/cluster.py, ``ensure_ray``).

The probe starts the local Ray the way a run does, in a session of its own, runs
an actor and a task, and lists the TCP sockets every process of that session
listens on, read from ``/proc`` (no ``ss`` or psutil needed).
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import os
import ray
from pipeline.cluster import ensure_ray
from pipeline.config import load_config

assert ensure_ray(load_config(None, ["ray.num_cpus=1"])) is None

@ray.remote(num_cpus=0)
class Echo:
    def pid(self):
        return os.getpid()

@ray.remote(num_cpus=0)
def pid():
    return os.getpid()

assert ray.get(Echo.remote().pid.remote()) != ray.get(pid.remote())
print(ray.get_runtime_context().gcs_address, flush=True)
input()  # the test reads the sockets now, then lets the probe end
ray.shutdown()
"""


def _session_pids(session: int) -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[3]) == session:  # field 6: the session id
                pids.add(int(entry.name))
    return pids


def _socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        inodes.update(link[len("socket:["):-1] for link in links if link.startswith("socket:["))
    return inodes


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A /proc/net/tcp{,6} address: little-endian 32-bit words in hex."""
    raw = bytes.fromhex(hex_address)
    return ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))


def listening(pids: set[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that one of ``pids`` holds."""
    inodes = _socket_inodes(pids)
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                host, port = fields[1].split(":")
                found.append((str(_address(host)), int(port, 16)))
    return found


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None
                              and ip.ipv4_mapped.is_loopback)


def test_the_address_check_tells_loopback_from_every_interface() -> None:
    assert _address("0100007F") == ipaddress.ip_address("127.0.0.1")
    assert _address("0000000000000000FFFF00000100007F") == ipaddress.ip_address("::ffff:127.0.0.1")
    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("::ffff:127.0.0.1")
    assert not _loopback("0.0.0.0") and not _loopback("::") and not _loopback("192.0.2.2")


@pytest.mark.slow  # starts a Ray (~10-20 s)
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc")
def test_a_local_ray_listens_on_loopback_only() -> None:
    probe = subprocess.Popen([sys.executable, "-c", _PROBE], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True,
                             env={**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)})
    try:
        gcs = probe.stdout.readline().strip()
        assert gcs, probe.stderr.read()[-3000:]
        sockets = listening(_session_pids(probe.pid))
    finally:
        probe.communicate(input="\n", timeout=60)
    assert len(sockets) >= 4  # the GCS, the raylet's two, the driver's and the workers' core-worker servers
    assert [s for s in sockets if not _loopback(s[0])] == [], sockets
    assert gcs.startswith("127.0.0.1:")  # the node's address, which Ray's servers bind to
