"""Reading a data file's metadata (pipeline.data.info): foreign and outdated files ask for a re-import."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data import DataError, load_dataset, read_info


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
