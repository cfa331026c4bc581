"""Shared fixtures: tiny data sets written through the real data layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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
