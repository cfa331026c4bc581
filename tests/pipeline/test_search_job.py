"""What a search job reads: the searches' proxy subset, never more than the run's own limits."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import load_config
from pipeline.search_job import load_search_data


def test_searches_use_the_proxy_subset_and_the_tighter_of_two_limits(tiny_dataset: Path) -> None:
    def sizes(*overrides: str) -> tuple[int, int]:
        data = load_search_data(load_config(None, [f"data.path={tiny_dataset}", *overrides]), tiny_dataset)
        return len(data.x_train), len(data.x_val)

    full = sizes()
    assert sizes("data.search_train_limit=50", "data.search_val_limit=20") == (50, 20)
    assert sizes("data.train_limit=40", "data.search_train_limit=50") == (40, full[1])  # the run's limit wins
    assert sizes("data.train_limit=60", "data.search_train_limit=30") == (30, full[1])
