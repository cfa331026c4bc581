"""Writing data files: one Parquet file per data set.

Layout (``SCHEMA_VERSION`` 1):

* ``image``: ``fixed_size_binary(H*W*C)``, the uint8 pixels of one image in HWC order,
  so a whole column is one contiguous buffer that loads without per-row work;
* ``label``: int16 (int32 for more than 32767 classes), an index into ``classes``;
* ``split``: dictionary-encoded string, one of ``SPLITS``;
* schema metadata ``autospace``: JSON of :class:`DatasetInfo` (without the path).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.errors import DataError
from pipeline.data.info import SCHEMA_VERSION, SPLITS, DatasetInfo
from pipeline.data.splits import carve_split
from spaces.atomic import write_atomically

__all__ = ["write_dataset"]


def write_dataset(
    out: Path,
    images: np.ndarray,
    labels: np.ndarray,
    splits: np.ndarray,
    classes: Sequence[str],
    source: str,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> DatasetInfo:
    """Validate, carve ``val`` out of ``train`` and write the data set to ``out`` atomically.

    ``images`` is uint8 [N, H, W, C]; ``splits`` holds one of ``SPLITS`` per row.
    The file is written next to ``out`` under a temporary name and renamed into
    place, so ``out`` is either the complete new file or left untouched.
    """
    out = Path(out)
    labels, splits = np.asarray(labels), np.asarray(splits)
    _validate(images, labels, splits, classes, source)
    splits = carve_split(labels, splits, into="val", fraction=val_fraction, seed=seed)
    counts = {name: int(np.count_nonzero(splits == name)) for name in SPLITS}
    mean, std = _channel_stats(images[splits == "train"])
    num_rows, height, width, channels = images.shape
    info = DatasetInfo(
        schema_version=SCHEMA_VERSION,
        classes=tuple(classes),
        shape=(channels, height, width),
        mean=mean,
        std=std,
        counts={name: count for name, count in counts.items() if count},
        source=source,
        val_seed=seed,
        val_fraction=val_fraction,
        path=out,
    )
    label_type = pa.int16() if len(classes) <= np.iinfo(np.int16).max else pa.int32()
    pixels = np.ascontiguousarray(images).reshape(num_rows, -1)
    table = pa.table(
        {
            "image": pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(pixels.shape[1]), num_rows, [None, pa.py_buffer(pixels)]
            ),
            "label": pa.array(labels, type=label_type),
            "split": pa.array(splits, type=pa.string()).dictionary_encode(),
        }
    ).replace_schema_metadata(info.to_metadata())
    _write_atomically(table, out)
    return info


def _validate(images: np.ndarray, labels: np.ndarray, splits: np.ndarray, classes: Sequence[str], source: str) -> None:
    """Reject inconsistent arrays before anything touches the disk."""
    where = f"cannot import {source}"
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        found = f"{images.dtype} array of shape {images.shape}" if isinstance(images, np.ndarray) else type(images)
        raise DataError(f"{where}: images must be a uint8 array [N, H, W, C], got {found}")
    if len(images) == 0:
        raise DataError(f"{where}: it contains no images")
    if len(labels) != len(images) or len(splits) != len(images):
        raise DataError(
            f"{where}: {len(images)} images but {len(labels)} labels and {len(splits)} split names; "
            "every image needs exactly one label and one split"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}")
    if not classes or len(set(classes)) != len(classes) or not all(isinstance(c, str) and c for c in classes):
        raise DataError(f"{where}: class names must be distinct non-empty strings, got {list(classes)!r}")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise DataError(
            f"{where}: labels range from {labels.min()} to {labels.max()}, but there are {len(classes)} "
            f"class names ({', '.join(classes)}); labels must be 0..{len(classes) - 1} — "
            "supply one class name per label"
        )
    unknown = sorted(set(np.unique(splits).tolist()) - set(SPLITS))
    if unknown:
        raise DataError(f"{where}: unknown split names {unknown}; allowed: {', '.join(SPLITS)}")
    if not np.any(splits == "train"):
        raise DataError(f"{where}: it has no training images; at least the train split must be non-empty")


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std of pixel/255, via 256-bin histograms.

    Histograms need no float copy of the images and give the same result as
    numpy's float64 mean/std up to rounding, however many images there are.
    """
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for channel in range(images.shape[-1]):
        counts = np.bincount(images[..., channel].ravel(), minlength=256)
        total = counts.sum()
        mean = float(counts @ values / total)
        means.append(mean)
        stds.append(float(np.sqrt(counts @ (values - mean) ** 2 / total)))
    return tuple(means), tuple(stds)


def _write_atomically(table: pa.Table, out: Path) -> None:
    """Write ``table`` to a temporary file beside ``out``, then rename it into place.

    The rename is atomic within one directory, so readers never see a half-written
    file and a failed write leaves an existing ``out`` as it was.
    """
    try:
        # LZ4 compresses pixels as well as snappy but decodes about 3x faster
        write_atomically(out, lambda temp: pq.write_table(
            table, temp, compression="lz4", use_dictionary=["split"], write_statistics=["label", "split"]))
    except OSError as exc:
        raise DataError(f"cannot write {out}: {exc}; choose an output path in a writable directory") from exc
