"""Tests of the Parquet data layer, on tiny real-format files written here."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from pipeline.data import (
    SCHEMA_VERSION,
    DataError,
    default_dataset,
    defaults,
    import_dataset,
    load_dataset,
    read_info,
    write_dataset,
)
from pipeline.data import cli as data_cli
from pipeline.data.dataset import _image_array

FASHION = defaults.FASHION_MNIST_DIR
HAS_FASHION = (FASHION / "train-images-idx3-ubyte.gz").is_file()


# --- helpers writing real formats ------------------------------------------------------------


def random_images(n: int, h: int, w: int, c: int | None = None, seed: int = 0) -> np.ndarray:
    shape = (n, h, w) if c is None else (n, h, w, c)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def balanced_labels(n: int, num_classes: int) -> np.ndarray:
    return np.arange(n) % num_classes


def write_idx(path: Path, array: np.ndarray) -> Path:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def make_idx_dir(root: Path, *, gz: bool = True, n_train: int = 40, n_test: int = 12, classes: int = 4) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {
        "train": (random_images(n_train, 6, 5, seed=1), balanced_labels(n_train, classes)),
        "test": (random_images(n_test, 6, 5, seed=2), balanced_labels(n_test, classes)),
    }
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = arrays[split]
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return arrays


def pairs(images: np.ndarray, labels: np.ndarray | torch.Tensor) -> list[tuple[bytes, int]]:
    """Order-free view of (image, label) rows, for comparing splits with their sources."""
    return sorted((image.tobytes(), int(label)) for image, label in zip(images, np.asarray(labels), strict=True))


def as_uint8_nhwc(x: torch.Tensor) -> np.ndarray:
    """Undo ``normalize=False`` loading: float NCHW in [0, 1] back to uint8 NHWC."""
    pixels = (x * 255).round().permute(0, 2, 3, 1).numpy()
    assert np.array_equal(pixels, (x * 255).permute(0, 2, 3, 1).numpy().round())
    return pixels.astype(np.uint8)


def write_pickle(path: Path, obj: object, protocol: int = pickle.DEFAULT_PROTOCOL) -> None:
    payload = pickle.dumps(obj, protocol=protocol)
    if protocol == 2:  # name numpy's helpers the way numpy 1.x did, as in the official CIFAR downloads
        payload = payload.replace(b"numpy._core.", b"numpy.core.")
    path.write_bytes(payload)


def make_cifar10_dir(root: Path, protocol: int = pickle.DEFAULT_PROTOCOL) -> dict:
    root.mkdir()
    rng = np.random.default_rng(3)
    batches = {}
    for name, n in (("data_batch_1", 20), ("data_batch_2", 20), ("test_batch", 10)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in balanced_labels(n, 10)]
        write_pickle(root / name, {b"batch_label": name.encode(), b"data": data, b"labels": labels}, protocol)
        batches[name] = (data, labels)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    write_pickle(root / "batches.meta", {b"label_names": names, b"num_vis": 3072}, protocol)
    return batches


def write_png_folder(root: Path, images_per_class: dict[str, np.ndarray], fmt: str = "PNG") -> None:
    for name, images in images_per_class.items():
        (root / name).mkdir(parents=True)
        for i, pixels in enumerate(images):
            suffix = "png" if fmt == "PNG" else "jpg"
            Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(
                root / name / f"{i:03d}.{suffix}", format=fmt
            )


# --- idx --------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_idx_import_round_trips_pixels_labels_and_counts(tmp_path: Path, gz: bool) -> None:
    arrays = make_idx_dir(tmp_path / "mnist", gz=gz)
    info = import_dataset("idx", tmp_path / "mnist", tmp_path / "out.parquet", val_fraction=0.25)

    assert info.counts == {"train": 30, "val": 10, "test": 12}
    assert info.shape == (1, 6, 5)
    assert info.classes == ("0", "1", "2", "3")
    assert info.schema_version == SCHEMA_VERSION
    assert read_info(tmp_path / "out.parquet") == info

    data = load_dataset(info.path)
    x_test, y_test = data.split("test", normalize=False)
    assert x_test.dtype == torch.float32 and y_test.dtype == torch.int64
    test_images, test_labels = arrays["test"]
    np.testing.assert_array_equal(x_test.numpy()[:, 0], test_images.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(y_test.numpy(), test_labels)

    train_images, train_labels = arrays["train"]
    (x_train, y_train), (x_val, y_val) = data.split("train", normalize=False), data.split("val", normalize=False)
    loaded = pairs(np.concatenate([as_uint8_nhwc(x_train), as_uint8_nhwc(x_val)])[..., 0], torch.cat([y_train, y_val]))
    assert loaded == pairs(train_images, train_labels)


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


def test_idx_class_names_from_classes_txt_and_fashion_path(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "fashion-tiny", classes=10)
    assert import_dataset("idx", tmp_path / "fashion-tiny", tmp_path / "f.parquet").classes[-1] == "Ankle boot"

    make_idx_dir(tmp_path / "named")
    (tmp_path / "named" / "classes.txt").write_text("zero\none\ntwo\nthree\n")
    assert import_dataset("idx", tmp_path / "named", tmp_path / "n.parquet").classes == ("zero", "one", "two", "three")

    with pytest.raises(DataError, match="labels range from 0 to 3, but there are 2 class names"):
        import_dataset("idx", tmp_path / "named", tmp_path / "x.parquet", classes=["a", "b"])


def test_idx_without_test_files_has_train_and_val_only(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "mnist", gz=False)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / "mnist" / name).unlink()
    data = load_dataset(import_dataset("idx", tmp_path / "mnist", tmp_path / "out.parquet").path)
    assert data.splits == ("train", "val")
    with pytest.raises(DataError, match=r"no 'test' split; splits present: train, val"):
        data.split("test")


def test_idx_truncated_file_names_file_and_byte_counts(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "mnist", gz=False)
    images = tmp_path / "mnist" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-7])
    with pytest.raises(DataError, match="train-images-idx3-ubyte is truncated") as error:
        import_dataset("idx", tmp_path / "mnist", tmp_path / "out.parquet")
    assert "1200 bytes" in str(error.value) and "1193 bytes" in str(error.value)


def test_idx_wrong_magic_and_count_mismatch(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "magic")
    labels = tmp_path / "magic" / "train-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros((40, 1), dtype=np.uint8))  # a 2-D file where labels (1-D) belong
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz does not start with the IDX magic .*0x00000801"):
        import_dataset("idx", tmp_path / "magic", tmp_path / "out.parquet")

    make_idx_dir(tmp_path / "count")
    write_idx(tmp_path / "count" / "train-labels-idx1-ubyte.gz", np.zeros(39, dtype=np.uint8))
    with pytest.raises(DataError, match=r"40 images but .* 39 labels"):
        import_dataset("idx", tmp_path / "count", tmp_path / "out.parquet")

    (tmp_path / "count" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="has no train-labels-idx1-ubyte"):
        import_dataset("idx", tmp_path / "count", tmp_path / "out.parquet")


# --- cifar ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_import_converts_chw_rows_and_decodes_names(tmp_path: Path, protocol: int) -> None:
    batches = make_cifar10_dir(tmp_path / "cifar-10-batches-py", protocol)
    info = import_dataset("cifar", tmp_path / "cifar-10-batches-py", tmp_path / "out.parquet")
    assert info.counts == {"train": 36, "val": 4, "test": 10}
    assert info.shape == (3, 32, 32)
    assert info.classes[:2] == ("airplane", "automobile") and info.num_classes == 10
    assert len(info.mean) == len(info.std) == 3

    x_test, y_test = load_dataset(info.path).split("test", normalize=False)
    data, labels = batches["test_batch"]
    np.testing.assert_array_equal((x_test * 255).round().to(torch.uint8).numpy(), data.reshape(-1, 3, 32, 32))
    assert y_test.tolist() == labels


def test_cifar100_import_uses_fine_labels(tmp_path: Path) -> None:
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    rng = np.random.default_rng(4)
    for name, n in (("train", 30), ("test", 6)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        write_pickle(root / name, {b"data": data, b"fine_labels": [i % 3 for i in range(n)], b"coarse_labels": [0] * n})
    write_pickle(root / "meta", {b"fine_label_names": [b"apple", b"bear", b"cloud"], b"coarse_label_names": [b"x"]})
    info = import_dataset("cifar", root, tmp_path / "out.parquet", val_fraction=0.2)
    assert info.classes == ("apple", "bear", "cloud")
    assert info.counts == {"train": 24, "val": 6, "test": 6}


class RunsShellCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


def test_cifar_pickle_with_disallowed_global_is_refused_without_running_it(tmp_path: Path) -> None:
    make_cifar10_dir(tmp_path / "cifar")
    marker = tmp_path / "pwned"
    write_pickle(tmp_path / "cifar" / "data_batch_2", {b"data": RunsShellCommand(f"touch {marker}"), b"labels": []})
    with pytest.raises(DataError, match=r"data_batch_2 refers to \w+\.system.*refusing"):
        import_dataset("cifar", tmp_path / "cifar", tmp_path / "out.parquet")
    assert not marker.exists()


def test_cifar_directory_without_meta_explains_layout(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"not a CIFAR directory.*batches\.meta"):
        import_dataset("cifar", tmp_path / "empty", tmp_path / "out.parquet")


# --- imagefolder ------------------------------------------------------------------------------


def test_imagefolder_png_grayscale_round_trips_with_folder_names_as_classes(tmp_path: Path) -> None:
    cats, dogs = random_images(5, 7, 4, 1, seed=5), random_images(5, 7, 4, 1, seed=6)
    write_png_folder(tmp_path / "pets", {"cat": cats, "dog": dogs})
    info = import_dataset("imagefolder", tmp_path / "pets", tmp_path / "out.parquet", val_fraction=0.2)
    assert info.classes == ("cat", "dog")
    assert info.shape == (1, 7, 4)
    assert info.counts == {"train": 8, "val": 2}

    data = load_dataset(info.path)
    (x_train, y_train), (x_val, y_val) = data.split("train", normalize=False), data.split("val", normalize=False)
    loaded = pairs(np.concatenate([as_uint8_nhwc(x_train), as_uint8_nhwc(x_val)]), torch.cat([y_train, y_val]))
    assert loaded == pairs(np.concatenate([cats, dogs]), np.repeat([0, 1], 5))


def test_imagefolder_jpeg_rgb_with_train_and_test_folders(tmp_path: Path) -> None:
    rgb = random_images(8, 16, 16, 3, seed=7)
    write_png_folder(tmp_path / "ds" / "train", {"a": rgb[:3], "b": rgb[3:6]}, fmt="JPEG")
    write_png_folder(tmp_path / "ds" / "test", {"a": rgb[6:7], "b": rgb[7:]}, fmt="JPEG")
    info = import_dataset("imagefolder", tmp_path / "ds", tmp_path / "out.parquet", val_fraction=0.0)
    assert info.counts == {"train": 6, "test": 2}
    assert info.shape == (3, 16, 16)

    x_test, y_test = load_dataset(info.path).split("test", normalize=False)
    decoded = np.asarray(Image.open(tmp_path / "ds" / "test" / "b" / "000.jpg"))  # JPEG is lossy: compare decodes
    np.testing.assert_array_equal(as_uint8_nhwc(x_test)[1], decoded)
    assert y_test.tolist() == [0, 1]


def test_imagefolder_rejects_mixed_sizes_empty_folders_and_broken_images(tmp_path: Path) -> None:
    write_png_folder(tmp_path / "mixed", {"a": random_images(2, 8, 8, 3), "b": random_images(1, 9, 8, 3)})
    with pytest.raises(DataError, match=r"b/000.png is 8x9 RGB but .*a/000.png is 8x8 RGB.*resize") as error:
        import_dataset("imagefolder", tmp_path / "mixed", tmp_path / "out.parquet")
    assert "width x height" in str(error.value)

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no class folders"):
        import_dataset("imagefolder", tmp_path / "empty", tmp_path / "out.parquet")

    write_png_folder(tmp_path / "hollow", {"a": random_images(2, 8, 8, 1)})
    (tmp_path / "hollow" / "b").mkdir()
    (tmp_path / "hollow" / "b" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"class folder .*hollow/b has no images"):
        import_dataset("imagefolder", tmp_path / "hollow", tmp_path / "out.parquet")

    write_png_folder(tmp_path / "broken", {"a": random_images(2, 8, 8, 1)})
    (tmp_path / "broken" / "a" / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"cannot decode .*a/bad.png"):
        import_dataset("imagefolder", tmp_path / "broken", tmp_path / "out.parquet")


# --- npz --------------------------------------------------------------------------------------


def test_npz_train_test_uint8_and_images_labels_float(tmp_path: Path) -> None:
    x_train, x_test = random_images(20, 5, 5, seed=8), random_images(4, 5, 5, seed=9)
    np.savez(
        tmp_path / "a.npz",
        x_train=x_train,
        y_train=balanced_labels(20, 2),
        x_test=x_test,
        y_test=balanced_labels(4, 2),
        classes=np.array(["no", "yes"]),
    )
    info = import_dataset("npz", tmp_path / "a.npz", tmp_path / "a.parquet")
    assert info.classes == ("no", "yes")
    assert info.counts == {"train": 18, "val": 2, "test": 4}
    x, _ = load_dataset(info.path).split("test", normalize=False)
    np.testing.assert_array_equal(as_uint8_nhwc(x)[..., 0], x_test)

    floats = random_images(10, 4, 4, 3, seed=10).astype(np.float32) / 255
    np.savez(tmp_path / "b.npz", images=floats, labels=balanced_labels(10, 5).reshape(-1, 1))
    info = import_dataset("npz", tmp_path / "b.npz", tmp_path / "b.parquet", val_fraction=0.0)
    assert info.shape == (3, 4, 4) and info.classes == ("0", "1", "2", "3", "4")
    x, _ = load_dataset(info.path).split("train", normalize=False)
    np.testing.assert_array_equal(as_uint8_nhwc(x), np.rint(floats * 255).astype(np.uint8))


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((4, 5, 5), dtype=np.int64), "int64; images must be uint8"),
        (np.full((4, 5, 5), 2.0), "float64; images must be uint8"),
        (np.zeros((4, 3, 5, 5), dtype=np.uint8), "looks like NCHW"),
    ],
    ids=["int64", "float-out-of-range", "nchw"],
)
def test_npz_rejects_bad_image_arrays(tmp_path: Path, images: np.ndarray, message: str) -> None:
    np.savez(tmp_path / "bad.npz", x_train=images, y_train=np.zeros(4, dtype=np.int64))
    with pytest.raises(DataError, match=rf"bad.npz\[x_train\].*{message}"):
        import_dataset("npz", tmp_path / "bad.npz", tmp_path / "out.parquet")


# --- writing: atomicity and validation ---------------------------------------------------------


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


def test_unsupported_format_and_missing_source(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"unknown data format 'tfrecord'; supported formats: idx, cifar, imagefolder, npz$"
    ):
        import_dataset("tfrecord", tmp_path, tmp_path / "out.parquet")
    with pytest.raises(DataError, match="does not exist"):
        import_dataset("idx", tmp_path / "nowhere", tmp_path / "out.parquet")


# --- reading ----------------------------------------------------------------------------------


def test_reading_foreign_or_outdated_files_asks_for_reimport(tmp_path: Path) -> None:
    table = pa.table({"image": pa.array([b"\x00"], pa.binary(1)), "label": [0], "split": ["train"]})
    pq.write_table(table, tmp_path / "plain.parquet")
    with pytest.raises(DataError, match=r"no AutoSpace metadata.*autospace data import"):
        read_info(tmp_path / "plain.parquet")

    old = table.replace_schema_metadata({"autospace": json.dumps({"schema_version": 0})})
    pq.write_table(old, tmp_path / "old.parquet")
    with pytest.raises(DataError, match=r"schema_version 0, but this AutoSpace reads schema_version 1.*data import"):
        load_dataset(tmp_path / "old.parquet")

    (tmp_path / "notes.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_info(tmp_path / "notes.parquet")
    with pytest.raises(DataError, match="does not exist"):
        read_info(tmp_path / "missing.parquet")


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


# --- CLI --------------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="autospace")
    data_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_import_then_info_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "d.npz", x_train=random_images(20, 5, 5), y_train=balanced_labels(20, 2))
    out = tmp_path / "nested" / "d.parquet"
    args = parse(["data", "import", "npz", str(tmp_path / "d.npz"), str(out), "--val-fraction", "0.2", "--seed", "3"])
    assert args.func(args) == 0
    summary = capsys.readouterr().out
    assert "train 16, val 4" in summary and "1x5x5" in summary and str(out) in summary

    args = parse(["data", "info", str(out), "--json"])
    assert args.func(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["counts"] == {"train": 16, "val": 4}
    assert info["shape"] == [1, 5, 5] and info["classes"] == ["0", "1"]
    assert info["val_seed"] == 3 and info["val_fraction"] == 0.2
    assert info["path"] == str(out) and info["source"].startswith("npz:")

    args = parse(["data", "import", "idx", str(tmp_path / "missing"), str(out)])
    with pytest.raises(DataError, match="missing does not exist"):
        args.func(args)


# --- defaults ---------------------------------------------------------------------------------


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
