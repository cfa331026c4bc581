"""The run's latency lookup table: one file per run directory and runtime (``latency_table.<runtime>.json``).

Entries are measured by the process that owns the run (the evolution actor, or
the ``autospace search`` command), between searches, never inside a search: a
table measured while trials train beside it would be noise, and every trial must
price latency with the same numbers. Under a latency budget, every entry a
candidate space can need is measured before its trials start; otherwise only
the derived architectures' entries are, to report their predicted latency.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterable

from pipeline.config import Config, ConfigError
from spaces.budget import LATENCY_BATCH
from spaces.latency import LatencyTable, LatencyTableError, MeasureSettings
from spaces.search import SearchResult
from spaces.space import SearchSpace
from spaces.supernet import space_latency_keys

__all__ = ["load_table", "measure_spaces", "open_table", "predict_latency", "table_file"]


def table_file(folder: Path, config: Config) -> Path:
    """Where a folder keeps its table for the configured runtime (a runtime switch starts a new file)."""
    return folder / f"latency_table.{config.budget.latency_runtime}.json"


def _settings(config: Config) -> MeasureSettings:
    return MeasureSettings(runtime=config.budget.latency_runtime, batch=LATENCY_BATCH)


def load_table(path: Path, config: Config) -> LatencyTable:
    """The saved table, refused (with what to do) when it was measured for another runtime."""
    try:
        return LatencyTable.load(path, runtime=config.budget.latency_runtime, batch=LATENCY_BATCH)
    except LatencyTableError as err:
        raise ConfigError(f"{path}: {err} (or delete the file to re-measure it for "
                          f"budget.latency_runtime={config.budget.latency_runtime})") from None


def open_table(path: Path, config: Config) -> LatencyTable:
    """The saved table, or a new one for the configured runtime (its call overhead measured now)."""
    return load_table(path, config) if path.exists() else LatencyTable.create(_settings(config))


def measure_spaces(path: Path, config: Config, spaces: Iterable[SearchSpace]) -> tuple[LatencyTable, int]:
    """Measure (and save) every entry the spaces' members can need that the table lacks; returns the
    table and how many entries were added."""
    table = open_table(path, config)
    added = sum(len(table.ensure_keys(space_latency_keys(space))) for space in spaces)
    table.save(path)
    return table, added


def predict_latency(path: Path, config: Config, results: Iterable[SearchResult | None]) -> list[SearchResult | None]:
    """The results with ``predicted_latency_ms`` set (the derived arch on the table's runtime), measuring
    only entries the table lacks."""
    table = open_table(path, config)
    predicted = []
    for result in results:
        if result is not None:
            table.ensure(result.arch)
            result = replace(result, predicted_latency_ms=table.predict(result.arch))
        predicted.append(result)
    table.save(path)
    return predicted
