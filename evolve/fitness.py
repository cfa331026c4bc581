"""Fitness: per-cell evidence from a search's architecture probabilities, and space-level reward.

Cell evidence (AutoSpace's differentiable fitness): after a supernet search of a
candidate space, a cell's softmax probability in its layer, scaled by the number
of choices so that a uniform layer gives 1.0. A cell's fitness is a moving
average of its evidence over the generations it was sampled in.

Space reward (MnasNet): ``acc * (cost / target) ** w`` with ``w < 0`` above the
target and 0 below it — a soft ceiling that still ranks spaces whose derived
architectures overshoot.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from spaces.space import SKIP, SearchSpace

__all__ = ["average_evidence", "cell_evidence", "space_reward", "moving_average"]


def cell_evidence(space: SearchSpace, probabilities: dict[str, Any]) -> dict[tuple[int, int, str], float]:
    """Evidence per (stage, layer, cell) from one search; ``skip`` is not a cell and is left out."""
    evidence: dict[tuple[int, int, str], float] = {}
    for s, (stage, layers) in enumerate(zip(space.stages, probabilities["cells"])):
        for i, probs in enumerate(layers):
            choices = stage.choices(i)
            if len(probs) != len(choices):
                raise ValueError(f"stage {s} layer {i}: {len(probs)} probabilities for {len(choices)} choices")
            for cell, p in zip(choices, probs):
                if cell != SKIP:
                    evidence[(s, i, cell)] = p * len(choices)
    return evidence


def average_evidence(items: list[dict[tuple[int, int, str], float]]) -> dict[tuple[int, int, str], float]:
    """Mean evidence of each cell over the spaces of one generation that offered it."""
    sums: dict[tuple[int, int, str], list[float]] = defaultdict(list)
    for evidence in items:
        for key, value in evidence.items():
            sums[key].append(value)
    return {key: sum(values) / len(values) for key, values in sums.items()}


def moving_average(old: float, new: float, momentum: float, first: bool) -> float:
    return new if first else momentum * old + (1 - momentum) * new


def space_reward(accuracy: float, cost: float, target: float, exponent: float) -> float:
    """MnasNet reward with a soft ceiling: no penalty at or below the target."""
    return accuracy * (cost / target) ** exponent if cost > target else accuracy
