"""AutoSpace's data layer: image-classification data sets as single Parquet files.

Import once with :func:`import_dataset` (or ``autospace data import``), then
:func:`load_dataset` hands out normalised tensors per split in well under a second.
"""

from __future__ import annotations

from pipeline.data.dataset import ImageDataset, load_dataset
from pipeline.data.defaults import default_dataset
from pipeline.data.errors import DataError
from pipeline.data.importers import FORMATS, import_dataset
from pipeline.data.info import SCHEMA_VERSION, SPLITS, DatasetInfo, read_info
from pipeline.data.store import write_dataset

__all__ = [
    "FORMATS",
    "SCHEMA_VERSION",
    "SPLITS",
    "DataError",
    "DatasetInfo",
    "ImageDataset",
    "default_dataset",
    "import_dataset",
    "load_dataset",
    "read_info",
    "write_dataset",
]
