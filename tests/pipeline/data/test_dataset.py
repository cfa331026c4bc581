"""Loading (pipeline.data.dataset): normalisation by the train statistics, row groups, seeded limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.data import DataError, import_dataset, load_dataset
from pipeline.data.dataset import _image_array
from tests.pipeline.data.formats import as_uint8_nhwc, make_idx_dir, pairs


def test_mean_std_are_train_split_statistics_and_normalize_uses_them(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "mnist")
    data = load_dataset(import_dataset("idx", tmp_path / "mnist", tmp_path / "out.parquet").path)
    raw, _ = data.split("train", normalize=False)
    train = as_uint8_nhwc(raw).astype(np.float64) / 255
    assert data.info.mean == pytest.approx([train.mean()], abs=1e-12)
    assert data.info.std == pytest.approx([train.std()], abs=1e-12)

    normalized, _ = data.split("train")
    expected = (raw.double() - train.mean()) / train.std()
    torch.testing.assert_close(normalized.double(), expected, atol=1e-5, rtol=0)


def test_loading_handles_many_row_groups_and_sliced_columns(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "mnist")
    info = import_dataset("idx", tmp_path / "mnist", tmp_path / "one.parquet")
    table = pq.read_table(info.path)
    pq.write_table(table, tmp_path / "many.parquet", row_group_size=7)  # keeps the schema metadata
    one, many = load_dataset(info.path), load_dataset(tmp_path / "many.parquet")
    for split in one.splits:
        assert all(torch.equal(a, b) for a, b in zip(one.split(split), many.split(split), strict=True))

    column = table.column("image").combine_chunks()
    sliced = pa.chunked_array([column.slice(5)])
    expected = np.frombuffer(column.buffers()[1], dtype=np.uint8).reshape(-1, 6, 5, 1)[5:]
    np.testing.assert_array_equal(_image_array(sliced, info, info.path), expected)


def test_split_limit_is_a_seeded_sample_of_the_split(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "mnist", n_train=80)
    data = load_dataset(import_dataset("idx", tmp_path / "mnist", tmp_path / "out.parquet").path)
    full, _ = data.split("train", normalize=False)
    sample, labels = data.split("train", limit=10, seed=5, normalize=False)
    assert sample.shape == (10, 1, 6, 5) and labels.shape == (10,)
    assert torch.equal(sample, data.split("train", limit=10, seed=5, normalize=False)[0])
    assert not torch.equal(sample, data.split("train", limit=10, seed=6, normalize=False)[0])
    assert set(pairs(as_uint8_nhwc(sample), labels)) <= set(pairs(as_uint8_nhwc(full), data.split("train")[1]))
    assert len(data.split("train", limit=10_000)[0]) == 72
    with pytest.raises(DataError, match="limit must be a positive"):
        data.split("train", limit=0)
