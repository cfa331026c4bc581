"""Derivation on the budget: what fits is ranked by inherited accuracy; nothing lands over a binding target."""

from __future__ import annotations

import random
import statistics

import pytest
import torch

from spaces.cost import arch_cost
from spaces.budget import budget_cost
from spaces.derive import derive_on_budget, inherited_accuracy
from spaces.search import SearchSettings, search
from spaces.supernet import DenseNASSupernet, DMaskingSupernet, Supernet
from tests.spaces.tiny_space import quadrant_data, tiny_space

SUPERNETS = [DMaskingSupernet, DenseNASSupernet]
DATA = quadrant_data(n_train=256, n_val=64)


def _median_member_madds() -> float:
    rng = random.Random(0)
    return statistics.median(arch_cost(tiny_space().sample(rng)).madds for _ in range(300))


@pytest.mark.parametrize("cls", SUPERNETS, ids=["dmasking", "densenas"])
def test_derived_choice_lies_in_the_window_below_the_target(cls: type[Supernet]) -> None:
    torch.manual_seed(0)
    net = cls(tiny_space()).eval()
    target = _median_member_madds()
    choice, candidates = derive_on_budget(net, "madds", target, DATA.x_train, DATA.x_val, DATA.y_val, ranked=4)
    assert 0.9 * target <= arch_cost(net.arch(choice)).madds <= target
    assert 1 <= len(candidates) <= 4 and candidates[0].choice == choice
    assert [c.accuracy for c in candidates] == sorted((c.accuracy for c in candidates), reverse=True)
    assert all(0.9 * target <= c.cost <= target for c in candidates)
    assert candidates[0].accuracy == inherited_accuracy(net, choice, DATA.x_train, DATA.x_val, DATA.y_val)


def test_unreachable_target_gives_the_cheapest_draw_unranked() -> None:
    net = DMaskingSupernet(tiny_space())
    choice, candidates = derive_on_budget(net, "madds", 1.0, DATA.x_train, DATA.x_val, DATA.y_val, samples=64)
    assert candidates == []
    generator = torch.Generator().manual_seed(0)
    draws = [net.derive(), *(net.sample_path(1.0, generator, gates=False).choice for _ in range(64))]
    assert arch_cost(net.arch(choice)).madds == min(arch_cost(net.arch(c)).madds for c in draws)


def test_ranked_zero_is_the_most_probable_architecture() -> None:
    net = DMaskingSupernet(tiny_space())
    with torch.no_grad():
        net.resolution_logits.copy_(torch.tensor([0.0, 2.0]))
    assert derive_on_budget(net, "madds", 1e9, DATA.x_train, DATA.x_val, DATA.y_val, ranked=0) == (net.derive(), [])


def test_latency_cost_needs_a_table() -> None:
    with pytest.raises(ValueError, match="latency table"):
        budget_cost(tiny_space().sample(random.Random(0)), "latency")


@pytest.mark.parametrize("supernet", ["dmasking", "densenas"])
def test_search_under_a_binding_budget_never_lands_over_it(supernet: str) -> None:
    target = _median_member_madds()
    settings = SearchSettings(epochs=2, warmup_epochs=1, batch_size=32, lr=0.1, arch_lr=0.05, finetune_epochs=0,
                              cost_loss="hinge", target=target, supernet=supernet, derive_ranked=3)
    result = search(tiny_space(), DATA, settings)
    assert 0.9 * target <= result.cost.madds <= target
    assert result.candidates and result.candidates[0].arch == result.arch.encode()
    assert set(result.entropy) == {"cells", "widths", "resolution", "mean", "max"}
