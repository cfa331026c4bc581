"""Deterministic, stratified carving of one split out of another."""

from __future__ import annotations

import numpy as np

from pipeline.data.errors import DataError

__all__ = ["carve_split"]


def carve_split(
    labels: np.ndarray,
    splits: np.ndarray,
    *,
    into: str,
    fraction: float,
    seed: int,
    source: str = "train",
) -> np.ndarray:
    """Return a copy of ``splits`` where ``fraction`` of each class's ``source`` rows move to ``into``.

    Stratifying per class keeps the class balance of both parts; a seeded
    generator makes the same seed give the same rows on every machine. Each
    class keeps at least one ``source`` row so no class vanishes from training.
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"the {into} fraction must be in [0, 1), got {fraction}; e.g. use 0.1 for 10%")
    carved = np.array(splits, dtype=object)
    if fraction == 0.0:
        return carved
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(carved == source)
    candidate_labels = labels[candidates]
    for label in np.unique(candidate_labels):
        rows = candidates[candidate_labels == label]
        take = min(round(len(rows) * fraction), len(rows) - 1)
        carved[rng.permutation(rows)[:take]] = into
    return carved
