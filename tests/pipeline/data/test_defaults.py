"""The embedded default data set (pipeline.data.defaults): Fashion-MNIST when installed, else digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.data import default_dataset, defaults, import_dataset, load_dataset, read_info
from tests.pipeline.data.formats import make_idx_dir

FASHION = defaults.FASHION_MNIST_DIR
HAS_FASHION = (FASHION / "train-images-idx3-ubyte.gz").is_file()


def test_default_dataset_falls_back_to_digits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "FASHION_MNIST_DIR", tmp_path / "no-such-dir")
    path = default_dataset(tmp_path / "cache")
    assert path == tmp_path / "cache" / "digits.parquet"
    info = read_info(path)
    assert sum(info.counts.values()) == 1797
    assert info.counts["test"] == 359  # round(1797 * 0.2)
    assert info.shape == (1, 8, 8) and info.num_classes == 10
    x, _ = load_dataset(path).split("test", normalize=False)
    assert x.max() == 1.0

    modified = path.stat().st_mtime_ns
    assert default_dataset(tmp_path / "cache") == path
    assert path.stat().st_mtime_ns == modified


def test_default_dataset_imports_idx_files_from_the_fashion_dir_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_idx_dir(tmp_path / "fashion", classes=10)
    monkeypatch.setattr(defaults, "FASHION_MNIST_DIR", tmp_path / "fashion")
    path = default_dataset(tmp_path / "cache")
    assert path == tmp_path / "cache" / "fashion-mnist.parquet"
    assert read_info(path).classes[0] == "T-shirt/top"

    path.write_bytes(b"stale")  # unreadable caches are rebuilt
    assert read_info(default_dataset(tmp_path / "cache")).counts["test"] == 12


@pytest.mark.skipif(not HAS_FASHION, reason=f"Fashion-MNIST not installed in {FASHION}")
def test_fashion_mnist_import(tmp_path: Path) -> None:
    info = import_dataset("idx", FASHION, tmp_path / "fashion-mnist.parquet")
    assert info.counts == {"train": 54_000, "val": 6_000, "test": 10_000}
    assert info.shape == (1, 28, 28) and info.num_classes == 10
    assert info.classes[9] == "Ankle boot"
    assert info.mean[0] == pytest.approx(0.286, abs=1e-3)
    x, y = load_dataset(info.path).split("test")
    assert x.shape == (10_000, 1, 28, 28)
    assert np.bincount(y.numpy()).tolist() == [1000] * 10
