"""The importers (pipeline.data.importers): IDX, CIFAR, image folders and NPZ, on tiny real-format files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data import DataError, SCHEMA_VERSION, import_dataset, load_dataset, read_info
from tests.pipeline.data.formats import (
    as_uint8_nhwc, balanced_labels, make_cifar10_dir, make_idx_dir, pairs, random_images, write_idx, write_pickle,
    write_png_folder,
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


def test_unsupported_format_and_missing_source(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"unknown data format 'tfrecord'; supported formats: idx, cifar, imagefolder, npz$"
    ):
        import_dataset("tfrecord", tmp_path, tmp_path / "out.parquet")
    with pytest.raises(DataError, match="does not exist"):
        import_dataset("idx", tmp_path / "nowhere", tmp_path / "out.parquet")
