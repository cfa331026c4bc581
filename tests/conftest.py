"""Shared fixtures: tiny data sets written through the real data layer, one local Ray, torch threads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import ray
import torch

from pipeline.data import write_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-class, 12x12 grayscale Parquet data set whose classes are learnable (bright quadrant)."""
    rng = np.random.default_rng(0)
    n_train, n_test, size = 240, 80, 12
    labels = rng.integers(0, 4, n_train + n_test)
    images = rng.integers(0, 60, (labels.size, size, size, 1), dtype=np.uint8)
    half = size // 2
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 2)
        images[i, r * half:(r + 1) * half, c * half:(c + 1) * half, 0] += 150
    splits = np.array(["train"] * n_train + ["test"] * n_test)
    out = tmp_path_factory.mktemp("data") / "tiny.parquet"
    write_dataset(out, images, labels, splits, ["a", "b", "c", "d"], source="synthetic quadrants")
    return out


@pytest.fixture(autouse=True, scope="session")
def single_threaded_torch() -> Iterator[None]:
    """Run torch on one thread for the whole session.

    The networks in tests are tiny: on a shared 2-core machine intra-op threads only
    add spin-wait contention; and one fixed thread count keeps float reductions, and
    so seeded results, identical between tests.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def seeded_torch() -> None:
    """Seed torch before every test so random inputs are reproducible."""
    torch.manual_seed(0)


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
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never a `ray start` one
    try:
        yield ray.cluster_resources()
    finally:
        if started:
            ray.shutdown()
