"""The data set the pipeline uses when none is configured."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.errors import DataError
from pipeline.data.importers import IDX_FILES, import_dataset
from pipeline.data.info import read_info
from pipeline.data.splits import carve_split
from pipeline.data.store import write_dataset

__all__ = ["FASHION_MNIST_DIR", "default_dataset"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the machine image keeps the Fashion-MNIST IDX files (nothing is downloaded at run time)."""

DIGITS_TEST_FRACTION = 0.2


def default_dataset(cache_dir: Path) -> Path:
    """Path of the default data file in ``cache_dir``, importing it on first use.

    Fashion-MNIST when its IDX files are installed, else scikit-learn's bundled
    8x8 digits, so the pipeline always has data without network access. A cached
    file is reused as long as it is readable with the current schema.
    """
    cache_dir = Path(cache_dir)
    has_fashion = all(
        (FASHION_MNIST_DIR / name).is_file() or (FASHION_MNIST_DIR / f"{name}.gz").is_file()
        for name in IDX_FILES["train"]
    )
    out = cache_dir / ("fashion-mnist.parquet" if has_fashion else "digits.parquet")
    try:
        read_info(out)
        return out
    except DataError:
        pass
    if has_fashion:
        import_dataset("idx", FASHION_MNIST_DIR, out)
    else:
        _write_digits(out)
    return out


def _write_digits(out: Path) -> None:
    """scikit-learn's digits (1797 images, 0..16 grey levels) as uint8, split 80/20 train/test per class."""
    from sklearn.datasets import load_digits  # scikit-learn is only needed on this fallback path

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[..., np.newaxis]
    labels = digits.target.astype(np.int64)
    splits = carve_split(
        labels, np.full(len(labels), "train", dtype=object), into="test", fraction=DIGITS_TEST_FRACTION, seed=0
    )
    classes = [str(name) for name in digits.target_names]
    write_dataset(out, images, labels, splits, classes, source="sklearn:load_digits")
