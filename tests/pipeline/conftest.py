"""Pipeline fixtures: one local Ray for the whole test session."""

from __future__ import annotations

import os
from typing import Iterator

import pytest
import ray


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[dict[str, float]]:
    """A local 2-CPU Ray started once per session (start-up costs seconds); yields its resources.

    Token authentication is off for this local, test-only cluster, and Train's health
    check runs every 0.2 s instead of 2 s so reports and worker-group ends are noticed
    quickly. Both are read by processes Ray starts, so they are set before ``ray.init``.
    A Ray that is already initialised is reused and left running.
    """
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.2"
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.cluster_resources()
    finally:
        if started:
            ray.shutdown()
