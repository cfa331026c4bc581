"""Fitness: per-cell evidence from a search's accuracy effects, and the space-level reward with its error.

Cell evidence: after a supernet search of a candidate space, each cell's accuracy
effect at its place (:mod:`spaces.evidence`: how many points of validation
accuracy the cell is worth relative to its layer's other choices, among members
of the space within the budget). A cell's fitness is a moving average of its
evidence over the generations it was offered in; 0 means "no better or worse
than its neighbours". A cell never evaluated has an explicit prior: 0 for the
first population, and for a mutant its parent's fitness shrunk by
``MUTANT_PRIOR_SHRINK`` (a mutant resembles its parent, but only partly).

Resolution evidence (used only where the searches learn the resolution from
their accuracy, ``evolve.loop``): a search's learned P(resolution) relative to
uniform, averaged over a generation like cell evidence.

Space reward (MnasNet): ``acc * (cost / target) ** w`` with ``w < 0`` above the
target and 0 below it, averaged over the architectures the search drew from its
learned distribution and ranked (the derivation's candidates, all within the
budget when any draw fits): the reward of the space's learned distribution, not
of one lucky draw. Its standard error combines the spread between those
architectures with the binomial error of the validation images they share.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TypeVar

from spaces.search import SearchResult
from spaces.space import SKIP, SearchSpace

__all__ = ["MUTANT_PRIOR_SHRINK", "SpaceScore", "average_evidence", "cell_evidence", "moving_average",
           "resolution_evidence", "space_reward", "space_score"]

MUTANT_PRIOR_SHRINK = 0.5
Key = TypeVar("Key", tuple[int, int, str], str)


@dataclass(frozen=True)
class SpaceScore:
    """A space's reward (mean over its scored architectures) and the standard error of that mean."""

    reward: float
    se: float
    architectures: int


def cell_evidence(space: SearchSpace, result: SearchResult) -> dict[tuple[int, int, str], float]:
    """Evidence per (stage, layer, cell) from one search's accuracy effects; ``skip`` and cells the
    search never drew are left out."""
    if result.cell_effects is None:
        raise ValueError("the search result has no cell_effects: run the search with evidence_samples > 0")
    effects = result.cell_effects.effects
    evidence: dict[tuple[int, int, str], float] = {}
    for s, (stage, layers) in enumerate(zip(space.stages, effects)):
        for i, values in enumerate(layers):
            choices = stage.choices(i)
            if len(values) != len(choices):
                raise ValueError(f"stage {s} layer {i}: {len(values)} effects for {len(choices)} choices")
            for cell, value in zip(choices, values):
                if cell != SKIP and value is not None:
                    evidence[(s, i, cell)] = value
    return evidence


def resolution_evidence(space: SearchSpace, result: SearchResult) -> dict[str, float]:
    """Evidence per input resolution (str keys, as JSON has them) from one search's learned P(resolution):
    ``n * P - 1`` for the ``n`` on offer (0 = as probable as uniform); none from a space with one resolution."""
    learned = result.probabilities.get("resolution")
    if learned is None or len(space.resolutions) < 2:
        return {}
    return {str(r): len(learned) * p - 1 for r, p in zip(space.resolutions, learned)}


def average_evidence(items: list[dict[Key, float]]) -> dict[Key, float]:
    """Mean evidence of each key (a cell at its place, a resolution) over the spaces of one generation that
    offered it."""
    sums: dict[Key, list[float]] = defaultdict(list)
    for evidence in items:
        for key, value in evidence.items():
            sums[key].append(value)
    return {key: sum(values) / len(values) for key, values in sums.items()}


def moving_average(old: float, new: float, momentum: float, first: bool) -> float:
    return new if first else momentum * old + (1 - momentum) * new


def space_reward(accuracy: float, cost: float, target: float, exponent: float) -> float:
    """MnasNet reward with a soft ceiling: no penalty at or below the target."""
    return accuracy * (cost / target) ** exponent if cost > target else accuracy


def space_score(result: SearchResult, metric: str, target: float, exponent: float) -> SpaceScore:
    """The reward of a searched space over its ranked candidates (module docstring), with its standard error.

    A search that ranked none (nothing fit, or ranking was off) is scored by its derived
    architecture alone, with the binomial error of its validation accuracy.
    """
    images = max(result.val_images, 1)
    scored = [c for c in result.candidates if c.accuracy is not None]
    if not scored:
        accuracy = float(result.val_accuracy)
        reward = space_reward(accuracy, result.cost_on(metric), target, exponent)
        return SpaceScore(reward, math.sqrt(accuracy * (1 - accuracy) / images), 1)
    rewards = [space_reward(c.accuracy, c.cost, target, exponent) for c in scored]
    mean = sum(rewards) / len(rewards)
    spread = sum((r - mean) ** 2 for r in rewards) / (len(rewards) - 1) if len(rewards) > 1 else 0.0
    accuracy = sum(c.accuracy for c in scored) / len(scored)
    return SpaceScore(mean, math.sqrt(spread / len(rewards) + accuracy * (1 - accuracy) / images), len(rewards))
