"""The run's weight pool: merged per cell from the best-rewarded search, older cells kept, bad files refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.weight_pool import load_pool, merge_pools
from spaces.search import CheckpointError


def _save(path: Path, pool: dict) -> Path:
    torch.save(pool, path)
    return path


def test_each_cell_comes_from_the_best_rewarded_search_and_old_cells_are_kept(tmp_path: Path) -> None:
    previous = _save(tmp_path / "previous.pt", {"0/0/a": {"w": torch.zeros(2)}, "0/0/old": {"w": torch.ones(1)}})
    worse = _save(tmp_path / "worse.pt", {"0/0/a": {"w": torch.full((2,), 1.0)}, "0/1/b": {"w": torch.full((2,), 1.0)}})
    better = _save(tmp_path / "better.pt", {"0/0/a": {"w": torch.full((2,), 2.0)}})
    out = tmp_path / "gen-1" / "pool.pt"
    assert merge_pools(previous, [(worse, 0.6), (better, 0.8), (tmp_path / "failed.pt", 0.9)], out) == 3
    pool = load_pool(out)
    assert pool["0/0/a"]["w"].tolist() == [2.0, 2.0]  # the better search's
    assert pool["0/1/b"]["w"].tolist() == [1.0, 1.0]  # only the worse one had it
    assert pool["0/0/old"]["w"].tolist() == [1.0]  # nobody offered it this time: the previous pool's


def test_a_pool_that_is_not_one_is_refused_with_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "pool.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="(?s)weight pool .* cannot be read.*delete it and resume"):
        load_pool(bad)
    torch.save([1, 2, 3], bad)
    with pytest.raises(CheckpointError, match="does not hold a weight pool"):
        load_pool(bad)


def test_a_mutant_starts_from_its_parents_weights_at_every_place_of_its_layer(tmp_path: Path) -> None:
    searched = _save(tmp_path / "s.pt", {"1/0/ir_k3_e3_relu": {"w": torch.ones(2)},
                                         "1/0/8>12/ir_k3_e3_relu": {"w": torch.full((2,), 3.0)},
                                         "1/1/ir_k3_e3_relu": {"w": torch.full((2,), 5.0)},
                                         "1/0/ir_k5_e3_relu": {"w": torch.full((2,), 7.0)}})
    out = tmp_path / "pool.pt"
    merge_pools(None, [(searched, 0.5)], out, mutants=[(1, 0, "ir_k3_e3_relu", "ir_k3_e3_swish"),
                                                       (1, 0, "ir_k3_e3_relu", "ir_k5_e3_relu")])
    pool = load_pool(out)
    assert pool["1/0/ir_k3_e3_swish"]["w"].tolist() == [1.0, 1.0]
    assert pool["1/0/8>12/ir_k3_e3_swish"]["w"].tolist() == [3.0, 3.0]  # DenseNAS places too
    assert "1/1/ir_k3_e3_swish" not in pool  # another layer's population bred nothing
    assert pool["1/0/ir_k5_e3_relu"]["w"].tolist() == [7.0, 7.0]  # weights a cell already has are kept
