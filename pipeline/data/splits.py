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
    """Return a copy of ``splits`` where ``fraction`` of the ``source`` rows move to ``into``.

    Rows are taken per class in proportion to the class sizes (so both parts keep
    the class balance), ``round(n * fraction)`` rows in total, chosen by a seeded
    generator so the same seed gives the same rows on every machine. Every class
    keeps at least one ``source`` row, so no class vanishes from training.
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"the {into} fraction must be in [0, 1), got {fraction}; e.g. use 0.1 for 10%")
    carved = np.array(splits, dtype=object)
    candidates = np.flatnonzero(carved == source)
    if len(candidates) == 0:
        return carved
    classes, sizes = np.unique(labels[candidates], return_counts=True)
    quotas = _proportional_quotas(sizes, round(len(candidates) * fraction))
    rng = np.random.default_rng(seed)
    for label, quota in zip(classes, quotas, strict=True):
        rows = candidates[labels[candidates] == label]
        carved[rng.permutation(rows)[:quota]] = into
    return carved


def _proportional_quotas(sizes: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``sizes`` (largest remainder), at most size - 1 each."""
    exact = sizes * (total / sizes.sum())
    quotas = np.minimum(np.floor(exact).astype(np.int64), sizes - 1)
    remainders = np.where(quotas + 1 < sizes, exact - quotas, -1.0)
    for index in np.argsort(-remainders, kind="stable")[: max(total - quotas.sum(), 0)]:
        if remainders[index] >= 0:
            quotas[index] += 1
    return quotas
