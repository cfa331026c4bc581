"""Loading data files into tensors, fast.

The ``image`` column is ``fixed_size_binary``, so all pixels of a file sit in
one contiguous Arrow buffer; viewing it with ``np.frombuffer`` avoids any
per-image Python work, which is what makes a 70k-image file load in well
under a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.data.errors import DataError
from pipeline.data.info import REIMPORT_HINT, DatasetInfo, read_info

__all__ = ["ImageDataset", "load_dataset"]


class ImageDataset:
    """An in-memory data set: uint8 pixels plus labels, handed out per split as tensors."""

    def __init__(self, info: DatasetInfo, images: np.ndarray, labels: np.ndarray, split_rows: dict[str, np.ndarray]):
        self.info = info
        self._images = images
        self._labels = labels
        self._split_rows = split_rows

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._split_rows)

    def split(
        self, name: str, *, limit: int | None = None, seed: int = 0, normalize: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (float32 NCHW) and labels (int64) of one split.

        Pixels are scaled to [0, 1]; with ``normalize`` they are then standardised
        per channel with the train-split mean/std stored in the file. ``limit``
        keeps the first ``limit`` rows of a ``seed``-ed permutation: a quick,
        reproducible, roughly class-balanced sample for smoke runs.
        """
        rows = self._rows(name, limit, seed)
        channels, height, width = self.info.shape
        # numpy casts, transposes and scales in one pass, several times faster than torch's uint8 -> float on CPU
        x = np.empty((len(rows), channels, height, width), dtype=np.float32)
        np.divide(self._images[rows].transpose(0, 3, 1, 2), np.float32(255), out=x, dtype=np.float32)
        if normalize:
            mean = np.asarray(self.info.mean, dtype=np.float32).reshape(1, -1, 1, 1)
            std = np.asarray(self.info.std, dtype=np.float32).reshape(1, -1, 1, 1)
            x -= mean
            x /= np.where(std > 0, std, np.float32(1))  # a constant channel has std 0
        return torch.from_numpy(x), torch.from_numpy(self._labels[rows].astype(np.int64))

    def _rows(self, name: str, limit: int | None, seed: int) -> np.ndarray:
        if name not in self._split_rows:
            raise DataError(f"{self.info.path} has no {name!r} split; splits present: {', '.join(self.splits)}")
        rows = self._split_rows[name]
        if limit is None:
            return rows
        if limit < 1:
            raise DataError(f"limit must be a positive number of images, got {limit}")
        return rows[np.random.default_rng(seed).permutation(len(rows))[:limit]]


def load_dataset(path: Path) -> ImageDataset:
    """Read a data file written by :func:`write_dataset` into memory."""
    path = Path(path)
    info = read_info(path)
    try:
        table = pq.read_table(path, columns=["image", "label", "split"])
    except (pa.ArrowInvalid, KeyError, OSError) as exc:
        raise DataError(f"{path} cannot be read as an AutoSpace data file ({exc}); {REIMPORT_HINT}") from exc
    images = _image_array(table.column("image"), info, path)
    labels = table.column("label").to_numpy()
    split_column = table.column("split").combine_chunks()
    if not isinstance(split_column, pa.DictionaryArray):
        split_column = split_column.dictionary_encode()
    codes = split_column.indices.to_numpy(zero_copy_only=False)
    split_rows = {name: np.flatnonzero(codes == code) for code, name in enumerate(split_column.dictionary.to_pylist())}
    ordered = {name: split_rows[name] for name in info.splits if name in split_rows}
    return ImageDataset(info, images, labels, ordered)


def _image_array(column: pa.ChunkedArray, info: DatasetInfo, path: Path) -> np.ndarray:
    """uint8 [N, H, W, C] view of the ``image`` column (copied only if it spans several chunks)."""
    channels, height, width = info.shape
    row_bytes = channels * height * width
    if column.type != pa.binary(row_bytes) or column.null_count:
        raise DataError(
            f"{path}: column 'image' is {column.type} with {column.null_count} nulls, expected "
            f"fixed_size_binary[{row_bytes}] (shape {channels}x{height}x{width}) without nulls; {REIMPORT_HINT}"
        )
    images = column.combine_chunks()
    data = images.buffers()[1]
    pixels = np.frombuffer(data, dtype=np.uint8, count=len(images) * row_bytes, offset=images.offset * row_bytes)
    return pixels.reshape(len(images), height, width, channels)
