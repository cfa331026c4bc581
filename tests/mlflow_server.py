"""A real ``mlflow server`` on 127.0.0.1 for tests, stopped with everything it started.

The server runs in its own process group: besides its web workers it starts a
job-runner child (STACK-NOTES), and stopping the group stops them all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.ray_nodes import free_port

__all__ = ["mlflow_server"]


@contextmanager
def mlflow_server(backend_store_uri: str, artifacts: Path | None = None, timeout: float = 120) -> Iterator[str]:
    """Serve ``backend_store_uri`` (and, with ``artifacts``, proxy artifact uploads into that folder);
    yields the server's ``http://127.0.0.1:PORT`` once ``/health`` answers."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if artifacts is not None:
        command += ["--artifacts-destination", str(artifacts)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "mlflow server did not start"
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server, its workers and its job runner: the session it leads
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
