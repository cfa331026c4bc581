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

__all__ = ["COST_KEYS", "average_evidence", "cell_evidence", "result_cost", "space_reward", "moving_average"]

COST_KEYS = {"madds": "madds", "params": "params", "latency": "predicted_latency_ms"}
"""Budget metric -> the key of a search result holding its derived architecture's cost on that metric."""


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


def result_cost(result: dict[str, Any], metric: str) -> float:
    """The derived architecture's cost on the budget metric (latency: the table's prediction, ms)."""
    if metric not in COST_KEYS:
        raise ValueError(f"budget metric {metric!r} is not one of {', '.join(COST_KEYS)}")
    cost = result.get(COST_KEYS[metric])
    if cost is None:
        raise ValueError(f"the search result lacks {COST_KEYS[metric]!r}, so its {metric} budget is unknown "
                         "(latency: predict the derived arch with the run's latency table first)")
    return float(cost)


def space_reward(accuracy: float, cost: float, target: float, exponent: float) -> float:
    """MnasNet reward with a soft ceiling: no penalty at or below the target."""
    return accuracy * (cost / target) ** exponent if cost > target else accuracy
