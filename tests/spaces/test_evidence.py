"""Cell accuracy effects: the additive fit recovers known effects; members are drawn within the budget."""

from __future__ import annotations

import pytest
import torch

from spaces.budget import budget_cost
from spaces.evidence import _ridge_effects, cell_effects, uniform_choice
from spaces.supernet import DMaskingSupernet
from tests.spaces.tiny_space import quadrant_data, tiny_space


def test_the_additive_fit_recovers_planted_cell_effects() -> None:
    net = DMaskingSupernet(tiny_space())
    generator = torch.Generator().manual_seed(0)
    planted = [[[0.0, 0.04], [0.01, -0.02, 0.0]], [[0.03, 0.0], [0.0, 0.0, -0.05]]]
    choices = [uniform_choice(net, generator) for _ in range(400)]
    noise = torch.Generator().manual_seed(1)
    accuracy = torch.tensor([0.7 + sum(planted[s][i][c] for s, cells in enumerate(ch.cells)
                                       for i, c in enumerate(cells)) for ch in choices])
    accuracy += 0.005 * torch.randn(len(choices), generator=noise)
    effects = _ridge_effects(net, choices, accuracy)
    for s, stage in enumerate(planted):
        for i, layer in enumerate(stage):
            centred = [v - sum(layer) / len(layer) for v in layer]
            assert effects[s][i] == pytest.approx(centred, abs=0.004)


def test_effects_are_centred_per_layer_and_measured_on_members_within_the_budget() -> None:
    net = DMaskingSupernet(tiny_space())
    data = quadrant_data()
    generator = torch.Generator().manual_seed(3)
    costs = sorted(budget_cost(net.arch(uniform_choice(net, generator)), "madds") for _ in range(200))
    median = costs[len(costs) // 2]
    found = cell_effects(net, "madds", median, data.x_train, data.x_val, data.y_val, samples=12, seed=0)
    assert found.samples == 12 and found.within_budget == 12
    for stage in found.effects:
        for layer in stage:
            drawn = [v for v in layer if v is not None]
            assert sum(drawn) == pytest.approx(0.0, abs=1e-9)
    impossible = cell_effects(net, "madds", costs[0] / 2, data.x_train, data.x_val, data.y_val, samples=6, seed=0)
    assert impossible.samples == 6 and impossible.within_budget == 0  # the cheapest members stand in
