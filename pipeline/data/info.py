"""Data set metadata: what a Parquet data file says about itself.

Everything a trainer needs before touching the pixels (classes, shape,
normalisation statistics, split sizes) lives in the Parquet footer under one
key, so :func:`read_info` answers without reading any image data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.errors import DataError

__all__ = ["METADATA_KEY", "SCHEMA_VERSION", "SPLITS", "DatasetInfo", "read_info"]

SCHEMA_VERSION = 1
"""Bumped whenever the file layout changes; older files must be re-imported."""

METADATA_KEY = b"autospace"
"""Parquet schema-metadata key holding the JSON metadata."""

SPLITS = ("train", "val", "test")
"""Split names a data file may contain, in canonical order."""

REIMPORT_HINT = "re-import the source data with `autospace data import`"


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata of one data file; ``shape`` is (C, H, W) and mean/std are per channel."""

    schema_version: int
    classes: tuple[str, ...]
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    counts: Mapping[str, int]
    source: str
    val_seed: int
    val_fraction: float
    path: Path

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def splits(self) -> tuple[str, ...]:
        """Names of the non-empty splits, in canonical order."""
        return tuple(name for name in SPLITS if self.counts.get(name, 0) > 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (lists instead of tuples, path as a string)."""
        return {
            "schema_version": self.schema_version,
            "classes": list(self.classes),
            "shape": list(self.shape),
            "mean": list(self.mean),
            "std": list(self.std),
            "counts": dict(self.counts),
            "source": self.source,
            "val_seed": self.val_seed,
            "val_fraction": self.val_fraction,
            "path": str(self.path),
        }

    def to_metadata(self) -> dict[bytes, bytes]:
        """The Parquet schema metadata that stores this info (the path is where it is, so it is not stored)."""
        fields = self.to_dict()
        del fields["path"]
        return {METADATA_KEY: json.dumps(fields).encode()}

    @classmethod
    def from_metadata(cls, metadata: Mapping[bytes, bytes] | None, path: Path) -> DatasetInfo:
        """Parse the footer metadata of ``path``; DataError if it is missing, old or malformed."""
        raw = (metadata or {}).get(METADATA_KEY)
        if raw is None:
            raise DataError(
                f"{path} has no AutoSpace metadata (schema key {METADATA_KEY.decode()!r}), "
                f"so it was not written by AutoSpace; {REIMPORT_HINT}"
            )
        try:
            fields = json.loads(raw)
            version = fields.get("schema_version")
        except (ValueError, AttributeError) as exc:
            raise DataError(f"{path} has unreadable AutoSpace metadata ({exc}); {REIMPORT_HINT}") from exc
        if version != SCHEMA_VERSION:
            raise DataError(
                f"{path} has schema_version {version!r}, but this AutoSpace reads schema_version "
                f"{SCHEMA_VERSION}; {REIMPORT_HINT}"
            )
        try:
            return cls(
                schema_version=version,
                classes=tuple(str(name) for name in fields["classes"]),
                shape=tuple(int(size) for size in fields["shape"]),  # type: ignore[arg-type]
                mean=tuple(float(value) for value in fields["mean"]),
                std=tuple(float(value) for value in fields["std"]),
                counts={str(name): int(count) for name, count in fields["counts"].items()},
                source=str(fields["source"]),
                val_seed=int(fields["val_seed"]),
                val_fraction=float(fields["val_fraction"]),
                path=path,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(
                f"{path} has incomplete AutoSpace metadata (bad or missing field {exc}); {REIMPORT_HINT}"
            ) from exc


def read_schema(path: Path) -> pa.Schema:
    """The Arrow schema of a Parquet file, read from its footer only."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist or is not a file; create it with `autospace data import`")
    try:
        return pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path} is not a readable Parquet file ({exc}); {REIMPORT_HINT}") from exc


def read_info(path: Path) -> DatasetInfo:
    """Metadata of a data file, reading only its footer (cheap even for large files)."""
    path = Path(path)
    return DatasetInfo.from_metadata(read_schema(path).metadata, path)
