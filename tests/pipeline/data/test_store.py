"""Writing data files (pipeline.data.store): atomic, validated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data import DataError, import_dataset, write_dataset
from tests.pipeline.data.formats import random_images


def test_failed_import_leaves_existing_output_untouched_and_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "data.parquet"
    out.write_bytes(b"previous contents")
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((4, 5, 5), dtype=np.int32), y_train=np.zeros(4, dtype=np.int64))
    with pytest.raises(DataError):
        import_dataset("npz", tmp_path / "bad.npz", out)
    assert out.read_bytes() == b"previous contents"

    def write_half_then_fail(table: pa.Table, where: str, **kwargs: object) -> None:
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError(28, "No space left on device")

    np.savez(tmp_path / "good.npz", x_train=random_images(4, 5, 5), y_train=np.zeros(4, dtype=np.int64))
    monkeypatch.setattr(pq, "write_table", write_half_then_fail)
    with pytest.raises(DataError, match=r"cannot write .*data.parquet.*No space left"):
        import_dataset("npz", tmp_path / "good.npz", out)
    assert out.read_bytes() == b"previous contents"
    assert sorted(p.name for p in out_dir.iterdir()) == ["data.parquet"]


def test_write_dataset_validates_labels_lengths_and_splits(tmp_path: Path) -> None:
    images = random_images(4, 2, 2, 1)
    train = np.array(["train"] * 4)
    with pytest.raises(DataError, match="labels range from 0 to 5, but there are 2 class names"):
        write_dataset(tmp_path / "x.parquet", images, np.array([0, 1, 5, 0]), train, ["a", "b"], "test-data")
    with pytest.raises(DataError, match="4 images but 3 labels"):
        write_dataset(tmp_path / "x.parquet", images, np.array([0, 1, 0]), train, ["a", "b"], "test-data")
    with pytest.raises(DataError, match=r"unknown split names \['holdout'\]"):
        write_dataset(tmp_path / "x.parquet", images, np.zeros(4, int), np.array(["holdout"] * 4), ["a"], "test-data")
    with pytest.raises(DataError, match="fraction must be in"):
        write_dataset(tmp_path / "x.parquet", images, np.zeros(4, int), train, ["a"], "test-data", val_fraction=1.5)
    assert not (tmp_path / "x.parquet").exists()
