"""What a trained supernet says about its cells: their accuracy effect among members within the budget.

AutoSpace scores cells by their learned architecture weights. Here those weights
carry the cost penalty too (the search's loss prices expected cost), so they
reward cheap cells as much as good ones, and with few architecture steps they
barely move. The evolution instead asks the supernet directly: draw members of
the space uniformly at random, keep those within the budget, measure each one's
validation accuracy with inherited weights (BN re-estimated), and fit accuracy
as an additive function of the cells chosen (ridge least squares, one indicator
per choice). A cell's *effect* is its coefficient minus its layer's mean: how
many accuracy points the cell is worth at that place, relative to the layer's
other choices, among the architectures that fit the budget. A cell that only
fits by forcing narrower widths or a lower resolution elsewhere pays for it in
the accuracy of those draws, so under a compute constraint the effects favour
the cells that win *within* it (AutoSpace's budget-specialised spaces).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spaces.budget import budget_cost
from spaces.derive import inherited_accuracy
from spaces.latency import LatencyTable
from spaces.supernet import ArchChoice, Supernet

__all__ = ["CellEffects", "cell_effects", "uniform_choice"]

RIDGE = 1.0  # in units of samples: shrinks the effects of rarely drawn cells toward their layer's mean
OVERSAMPLE = 16  # draws tried per wanted sample before settling for the cheapest ones


@dataclass(frozen=True)
class CellEffects:
    """Per stage, per layer, per choice: the accuracy effect (a fraction; None for a choice never drawn)."""

    effects: list[list[list[float | None]]]
    samples: int  # members measured
    within_budget: int  # of those, how many fit the budget

    def to_dict(self) -> dict:
        return {"effects": self.effects, "samples": self.samples, "within_budget": self.within_budget}

    @classmethod
    def from_dict(cls, data: dict) -> CellEffects:
        return cls(data["effects"], data["samples"], data["within_budget"])


def uniform_choice(net: Supernet, generator: torch.Generator) -> ArchChoice:
    """A member of the space drawn uniformly: every choice group independently, whatever the logits say."""
    def pick(n: int) -> int:
        return int(torch.randint(n, (1,), generator=generator))

    cells = tuple(tuple(pick(len(p)) for p in stage) for stage in net.stage_op_logits())
    widths = tuple(pick(len(stage.widths)) for stage in net.space.stages)
    return ArchChoice(cells=cells, widths=widths, resolution=pick(len(net.space.resolutions)))


def cell_effects(net: Supernet, metric: str, target: float, x_train: torch.Tensor, x_val: torch.Tensor,
                 y_val: torch.Tensor, *, samples: int, table: LatencyTable | None = None,
                 seed: int = 0) -> CellEffects:
    """Each cell's accuracy effect among ``samples`` uniform members within the budget (module docstring).

    When fewer than ``samples`` of ``OVERSAMPLE * samples`` draws fit, the cheapest of
    the rest fill up, so a budget no member meets still ranks cells (by cost, mostly).
    """
    generator = torch.Generator().manual_seed(seed)
    draws = [uniform_choice(net, generator) for _ in range(OVERSAMPLE * samples)]
    priced = [(budget_cost(net.arch(c), metric, table), c) for c in draws]
    fitting = [c for cost, c in priced if cost <= target][:samples]
    rest = sorted((pc for pc in priced if pc[0] > target), key=lambda pc: pc[0])
    chosen = fitting + [c for _, c in rest[:samples - len(fitting)]]
    accuracies = torch.tensor([inherited_accuracy(net, c, x_train, x_val, y_val) for c in chosen])
    return CellEffects(_ridge_effects(net, chosen, accuracies), len(chosen), len(fitting))


def _ridge_effects(net: Supernet, choices: list[ArchChoice],
                   accuracies: torch.Tensor) -> list[list[list[float | None]]]:
    """Additive per-choice effects of the cells, centred per layer (choices never drawn: None)."""
    sizes = [[len(p) for p in stage] for stage in net.stage_op_logits()]
    offsets, total = [], 0
    for stage in sizes:
        offsets.append([])
        for n in stage:
            offsets[-1].append(total)
            total += n
    x = torch.zeros(len(choices), total, dtype=torch.float64)
    for row, choice in enumerate(choices):
        for s, cells in enumerate(choice.cells):
            for i, cell in enumerate(cells):
                x[row, offsets[s][i] + cell] = 1.0
    y = accuracies.double() - accuracies.double().mean()
    x_centred = x - x.mean(0)
    coef = torch.linalg.solve(x_centred.T @ x_centred + RIDGE * torch.eye(total, dtype=torch.float64),
                              x_centred.T @ y)
    drawn = x.sum(0) > 0
    effects = []
    for s, stage in enumerate(sizes):
        effects.append([])
        for i, n in enumerate(stage):
            idx = slice(offsets[s][i], offsets[s][i] + n)
            seen = drawn[idx]
            mean = coef[idx][seen].mean() if seen.any() else 0.0
            effects[-1].append([float(c - mean) if d else None for c, d in zip(coef[idx], seen)])
    return effects
