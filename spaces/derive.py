"""Derivation that lands on the budget: sample from the learned distribution, keep what fits, rank.

The most probable architecture of a supernet can lie over the budget (the cost
loss bounds the *expected* cost, not the argmax's) or far under it. As FBNet
does, the search instead draws architectures from ``P_theta``, keeps those whose
cost on the budget metric lies in ``[(1 - window) * target, target]`` — or, when
none does, at most ``target`` — and ranks a few of them (the most probable one
first, when it qualifies) by the accuracy they reach on validation images with
inherited weights and recalibrated BatchNorm statistics. Only when no sample
fits at all does the cheapest one win, and the result says it is over budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spaces.budget import budget_cost
from spaces.latency import LatencyTable
from spaces.supernet import ArchChoice, Supernet, resize_input
from spaces.training import CALIBRATION_IMAGES, evaluate, recalibrate_bn

__all__ = ["Candidate", "derive_on_budget", "inherited_accuracy"]


@dataclass(frozen=True)
class Candidate:
    """One architecture the derivation considered, with its cost and (if ranked) inherited accuracy."""

    choice: ArchChoice | None  # None once read back from a record (only the derivation itself needs it)
    arch: str
    cost: float
    accuracy: float | None = None

    def to_dict(self) -> dict:
        return {"arch": self.arch, "cost": self.cost, "accuracy": self.accuracy}

    @classmethod
    def from_dict(cls, data: dict) -> Candidate:
        return cls(None, data["arch"], data["cost"], data.get("accuracy"))


def inherited_accuracy(net: Supernet, choice: ArchChoice, x_train: torch.Tensor, x_val: torch.Tensor,
                       y_val: torch.Tensor, calibration_images: int = CALIBRATION_IMAGES) -> float:
    """Validation accuracy of the child with the supernet's weights, BN statistics re-estimated."""
    arch = net.arch(choice)
    child = net.child(choice)
    recalibrate_bn(child, resize_input(x_train[:calibration_images], arch.input_size))
    return evaluate(child, resize_input(x_val, arch.input_size), y_val)


def derive_on_budget(net: Supernet, metric: str, target: float, x_train: torch.Tensor, x_val: torch.Tensor,
                     y_val: torch.Tensor, *, samples: int = 256, ranked: int = 8, window: float = 0.1,
                     table: LatencyTable | None = None, seed: int = 0) -> tuple[ArchChoice, list[Candidate]]:
    """The derived choice and the candidates ranked for it (best first).

    ``samples`` draws from the logits' distribution (seeded: every data-parallel rank
    draws the same); ``ranked`` of those that fit are scored by
    :func:`inherited_accuracy`. ``ranked=0`` returns the most probable choice unscored.
    """
    most_probable = net.derive()
    if ranked == 0:
        return most_probable, []
    generator = torch.Generator().manual_seed(seed)
    seen: dict[str, Candidate] = {}
    with torch.no_grad():
        draws = [most_probable, *(net.sample_path(1.0, generator, gates=False).choice for _ in range(samples))]
    for choice in draws:
        arch = net.arch(choice)
        key = arch.encode()
        if key not in seen:
            seen[key] = Candidate(choice, key, budget_cost(arch, metric, table))
    pool = list(seen.values())
    fitting = ([c for c in pool if (1 - window) * target <= c.cost <= target]
               or [c for c in pool if c.cost <= target])
    if not fitting:
        return min(pool, key=lambda c: c.cost).choice, []
    scored = [Candidate(c.choice, c.arch, c.cost, inherited_accuracy(net, c.choice, x_train, x_val, y_val))
              for c in fitting[:ranked]]
    scored.sort(key=lambda c: -c.accuracy)  # stable: ties keep the more probable (earlier drawn) one
    return scored[0].choice, scored
