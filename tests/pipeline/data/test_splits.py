"""The validation split carved from train (pipeline.data.splits): stratified, seeded, disjoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data import import_dataset, load_dataset, read_info
from tests.pipeline.data.formats import as_uint8_nhwc, make_idx_dir, pairs


def test_val_split_is_stratified_deterministic_per_seed_and_disjoint_from_train(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "mnist", n_train=80)

    def val_and_train(seed: int, name: str) -> tuple[list, list]:
        data = load_dataset(import_dataset("idx", tmp_path / "mnist", tmp_path / name, seed=seed).path)
        x_val, y_val = data.split("val", normalize=False)
        x_train, y_train = data.split("train", normalize=False)
        assert np.bincount(y_val.numpy()).tolist() == [2, 2, 2, 2]  # 10% of 20 per class
        return pairs(as_uint8_nhwc(x_val), y_val), pairs(as_uint8_nhwc(x_train), y_train)

    val_a, train_a = val_and_train(0, "a.parquet")
    val_b, _ = val_and_train(0, "b.parquet")
    val_c, _ = val_and_train(1, "c.parquet")
    assert val_a == val_b
    assert val_a != val_c
    assert not set(val_a) & set(train_a)
    assert len(val_a) + len(train_a) == 80
    assert read_info(tmp_path / "c.parquet").val_seed == 1
