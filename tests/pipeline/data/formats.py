"""Helpers that write tiny files in the real formats the importers read (IDX, CIFAR pickles, image folders)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image


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
