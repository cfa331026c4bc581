"""Derivation on the budget: what fits is ranked by inherited accuracy; nothing lands over a binding target."""

from __future__ import annotations

import copy
import random
import statistics

import pytest
import torch

from spaces.cost import arch_cost
from spaces.modules import ChildNet
from spaces.budget import budget_cost
from spaces.derive import FineTuning, derive_on_budget, inherited_accuracy, tuned_accuracy
from spaces.search import SearchSettings, search
from spaces.training import steps_per_epoch, train_epoch, train_steps
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
    choice, candidates = derive_on_budget(net, "madds", target, DATA.x_train, DATA.y_train, DATA.x_val, DATA.y_val,
                                          ranked=4)
    assert 0.9 * target <= arch_cost(net.arch(choice)).madds <= target
    assert 1 <= len(candidates) <= 4 and candidates[0].choice == choice
    assert [c.accuracy for c in candidates] == sorted((c.accuracy for c in candidates), reverse=True)
    assert all(0.9 * target <= c.cost <= target for c in candidates)
    assert candidates[0].accuracy == inherited_accuracy(net, choice, DATA.x_train, DATA.x_val, DATA.y_val)


def test_unreachable_target_gives_the_cheapest_draw_unranked() -> None:
    net = DMaskingSupernet(tiny_space())
    choice, candidates = derive_on_budget(net, "madds", 1.0, DATA.x_train, DATA.y_train, DATA.x_val, DATA.y_val,
                                          samples=64)
    assert candidates == []
    generator = torch.Generator().manual_seed(0)  # the learned draws, then as many at uniform resolutions
    draws = [net.derive(), *(net.sample_path(1.0, generator, gates=False, uniform_resolution=uniform).choice
                             for uniform in (False, True) for _ in range(64))]
    assert arch_cost(net.arch(choice)).madds == min(arch_cost(net.arch(c)).madds for c in draws)


@pytest.mark.parametrize("cls", SUPERNETS, ids=["dmasking", "densenas"])
def test_a_resolution_collapsed_below_the_window_derives_in_the_window_at_another(cls: type[Supernet]) -> None:
    net = cls(tiny_space()).eval()
    with torch.no_grad():  # every learned draw at 8 px, whose members all cost under 280k MAdds
        net.resolution_logits.copy_(torch.tensor([30.0, -30.0]))
    target = 4e5
    choice, candidates = derive_on_budget(net, "madds", target, DATA.x_train, DATA.y_train, DATA.x_val, DATA.y_val,
                                          ranked=3, keep_resolution=True)
    assert net.arch(net.derive()).input_size == 8
    assert 0.9 * target <= arch_cost(net.arch(choice)).madds <= target and net.arch(choice).input_size == 12
    assert candidates and all(0.9 * target <= c.cost <= target for c in candidates)


def test_ranked_zero_is_the_most_probable_architecture() -> None:
    net = DMaskingSupernet(tiny_space())
    with torch.no_grad():
        net.resolution_logits.copy_(torch.tensor([0.0, 2.0]))
    derived = derive_on_budget(net, "madds", 1e9, DATA.x_train, DATA.y_train, DATA.x_val, DATA.y_val, ranked=0)
    assert derived == (net.derive(), [])


@pytest.mark.parametrize("cls", SUPERNETS, ids=["dmasking", "densenas"])
def test_keep_resolution_ranks_only_the_most_probable_resolution(cls: type[Supernet]) -> None:
    net = cls(tiny_space()).eval()
    with torch.no_grad():
        net.resolution_logits.copy_(torch.tensor([0.0, 0.3]))  # both drawn often, 12 px the more probable

    def ranked_sizes(keep_resolution: bool) -> set[int]:
        _, candidates = derive_on_budget(net, "madds", 1e9, DATA.x_train, DATA.y_train, DATA.x_val, DATA.y_val,
                                         ranked=12, keep_resolution=keep_resolution)
        return {net.arch(c.choice).input_size for c in candidates}

    assert ranked_sizes(False) == {8, 12}
    assert ranked_sizes(True) == {net.arch(net.derive()).input_size} == {12}


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


@pytest.mark.parametrize("proxy", ["few_shot", "scratch"])
@pytest.mark.parametrize("cls", SUPERNETS, ids=["dmasking", "densenas"])
def test_trained_proxies_score_trained_copies_and_leave_the_supernet_alone(cls: type[Supernet], proxy: str) -> None:
    torch.manual_seed(0)
    net = cls(tiny_space()).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    tuning = FineTuning(steps=5, lr=0.05, batch_size=32, weight_decay=0.0, seed=3)
    choice, candidates = derive_on_budget(net, "madds", _median_member_madds(), DATA.x_train, DATA.y_train,
                                          DATA.x_val, DATA.y_val, ranked=3, proxy=proxy, tuning=tuning)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert [c.accuracy for c in candidates] == sorted((c.accuracy for c in candidates), reverse=True)
    best, start = candidates[0], net.child(choice)
    if proxy == "scratch":
        torch.manual_seed(tuning.seed)
        start = ChildNet(net.arch(choice))
        assert any(not torch.equal(a, b) for a, b in zip(start.parameters(), net.child(choice).parameters()))
    tuned = copy.deepcopy(start)
    assert best.accuracy == tuned_accuracy(tuned, net.arch(choice).input_size, DATA.x_train, DATA.y_train,
                                           DATA.x_val, DATA.y_val, tuning)
    assert best.inherited == inherited_accuracy(net, choice, DATA.x_train, DATA.x_val, DATA.y_val)
    assert any(not torch.equal(a, b) for a, b in zip(tuned.parameters(), start.parameters()))


def test_a_trained_proxy_needs_its_tuning() -> None:
    net = DMaskingSupernet(tiny_space())
    with pytest.raises(ValueError, match="proxy='scratch' trains each candidate"):
        derive_on_budget(net, "madds", 1e9, DATA.x_train, DATA.y_train, DATA.x_val, DATA.y_val, proxy="scratch")


def test_steps_of_epochs_train_exactly_as_the_epochs() -> None:
    def trained(run: str) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(DATA.x_train[0].numel(), 4))
        params = list(model.parameters())
        optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        order = torch.Generator().manual_seed(1)
        if run == "epochs":
            for _ in range(2):
                train_epoch(model, params, optimizer, DATA.x_train, DATA.y_train, 48, order)
        else:
            train_steps(model, params, optimizer, DATA.x_train, DATA.y_train, 48, order,
                        2 * steps_per_epoch(len(DATA.x_train), 48))
        return [p.detach() for p in params]

    assert all(torch.equal(a, b) for a, b in zip(trained("epochs"), trained("steps")))
