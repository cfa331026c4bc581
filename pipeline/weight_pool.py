"""The run's pool of supernet weights: what each generation's searches learned, for the next one to start from.

AutoSpace learns its cells in one continuing training run. Here every search
writes its trained supernet's weights per cell and place
(``spaces.supernet.Supernet.cell_weights``) beside its checkpoint; after a
generation, :func:`merge_pools` folds them into ``generations/gen-N/pool.pt``:
for each cell, the weights from the best-rewarded space that offered it, and for
cells no space offered this time, what the previous pool held. Each mutant the
generation bred starts from its parent's weights at its place (where shapes
differ, the overlap: ``spaces.supernet.layers.copy_overlap``), so a new cell
competes with trained neighbours from a trained start, not from scratch. The next
generation's searches (and the final search) load that file.

Why files in the run directory and not Ray's object store: the run directory
already has to be on storage every node sees (search checkpoints live there),
a file outlives a crashed driver or cluster (resume needs the pool that the
interrupted generation started from), and one pool per generation makes a
resumed generation start from exactly what it started from the first time.
"""

from __future__ import annotations

from pathlib import Path

import torch

from spaces.atomic import write_atomically
from spaces.search import CheckpointError

__all__ = ["POOL_FILE", "SEARCH_WEIGHTS_FILE", "load_pool", "merge_pools"]

POOL_FILE = "pool.pt"  # per generation directory: the pool after that generation
SEARCH_WEIGHTS_FILE = "cells.pt"  # per search directory: that search's trained weights

Pool = dict[str, dict[str, torch.Tensor]]


def load_pool(path: Path) -> Pool:
    """A pool file, read without executing anything in it (``weights_only``)."""
    try:
        pool = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or foreign file: say which and what to do
        raise CheckpointError(f"weight pool {path} cannot be read ({err}); delete it and resume: the "
                              "generation's searches then start from fresh weights") from None
    if not isinstance(pool, dict) or not all(isinstance(v, dict) for v in pool.values()):
        raise CheckpointError(f"weight pool {path} does not hold a weight pool; delete it and resume")
    return pool


def merge_pools(previous: Path | None, searches: list[tuple[Path, float]], out: Path,
                mutants: list[tuple[int, int, str, str]] = ()) -> int:
    """Write ``out``: per key, the weights of the best-rewarded search that has it, else ``previous``'s.

    ``searches`` are (weights file, space reward) pairs; a search without a file (it
    failed) is skipped. ``mutants`` are (stage, layer, parent cell, mutant cell): each
    mutant gets its parent's weights at every place of that layer where the pool has
    them and the mutant has none. Returns the number of keys in the merged pool.
    """
    merged: Pool = {}
    for path, _ in sorted(searches, key=lambda item: -item[1]):
        if path.exists():
            for key, weights in load_pool(path).items():
                merged.setdefault(key, weights)
    if previous is not None and previous.exists():
        for key, weights in load_pool(previous).items():
            merged.setdefault(key, weights)
    for stage, layer, parent, mutant in mutants:
        for key in [k for k in merged if k.startswith(f"{stage}/{layer}/") and k.endswith(f"/{parent}")]:
            merged.setdefault(key[:-len(parent)] + mutant, merged[key])
    write_atomically(out, lambda temp: torch.save(merged, temp))
    return len(merged)
