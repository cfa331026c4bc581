"""Single-path supernets: a sampled path is exactly its child, gates carry gradients, sampling follows the logits."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spaces.search import choice_entropy
from spaces.supernet import ArchChoice, DenseNASSupernet, DMaskingSupernet, PathSample, Supernet, hard_gumbel, \
    resize_input
from tests.spaces.test_supernets import _random_choice
from tests.spaces.tiny_space import all_choices, tiny_space

SUPERNETS = [DMaskingSupernet, DenseNASSupernet]


def _randomised(cls: type[Supernet]) -> Supernet:
    torch.manual_seed(0)
    net = cls(tiny_space())
    for module in net.modules():  # non-trivial BN so that equality means something
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return net


def _all_choices_at_every_resolution(net: Supernet) -> list[ArchChoice]:
    rng = random.Random(0)
    choices = [_random_choice(net, rng) for _ in range(10)]
    return [ArchChoice(c.cells, c.widths, r) for c in choices for r in range(len(net.space.resolutions))]


@pytest.mark.parametrize("cls", SUPERNETS, ids=["dmasking", "densenas"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_path_forward_is_exactly_the_inherited_child(cls: type[Supernet], mode: str) -> None:
    net = _randomised(cls)
    for i, choice in enumerate(_all_choices_at_every_resolution(net)):
        child = net.child(choice)
        child.train(mode == "train")
        net.train(mode == "train")
        x = torch.randn(4, 1, 12, 12, generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            expected = child(resize_input(x, net.arch(choice).input_size))
            got = net(x, PathSample.of(choice))
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("cls", SUPERNETS, ids=["dmasking", "densenas"])
def test_sliced_batch_norm_updates_the_leading_running_statistics(cls: type[Supernet]) -> None:
    net = _randomised(cls).train()
    choice = _random_choice(net, random.Random(5))
    child = net.child(choice).train()
    x = torch.randn(8, 1, 12, 12)
    with torch.no_grad():
        child(resize_input(x, net.arch(choice).input_size))
        net(x, PathSample.of(choice))
    # the child inherits leading slices: after the same batch, its statistics are the supernet's slices
    torch.testing.assert_close(net.child(choice).state_dict(), child.state_dict())


@pytest.mark.parametrize("cls", SUPERNETS, ids=["dmasking", "densenas"])
def test_straight_through_gradients_reach_every_architecture_parameter(cls: type[Supernet]) -> None:
    net = _randomised(cls).train()
    with torch.no_grad():  # non-uniform logits: gradients must not depend on a symmetric start
        for p in net.arch_parameters():
            p.uniform_(-1, 1)
    path = net.sample_path(tau=1.0, generator=torch.Generator().manual_seed(0))
    gates = [g for stage in path.op_gates for g in stage] + path.width_gates + [path.resolution_gate]
    assert all(g is not None and g.item() == pytest.approx(1.0) for g in gates)  # the hard one-hot in value
    F.cross_entropy(net(torch.randn(6, 1, 12, 12), path), torch.randint(0, 4, (6,))).backward()
    for logits in net.arch_parameters():
        assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("cls", SUPERNETS, ids=["dmasking", "densenas"])
def test_weight_step_paths_carry_no_gradient_to_the_logits(cls: type[Supernet]) -> None:
    net = _randomised(cls).train()
    path = net.sample_path(tau=1.0, generator=torch.Generator().manual_seed(1), gates=False)
    F.cross_entropy(net(torch.randn(6, 1, 12, 12), path), torch.randint(0, 4, (6,))).backward()
    assert all(p.grad is None for p in net.arch_parameters())
    # only the sampled child's weights were computed, so only they have gradients
    child_weights = sum(p.numel() for p in net.child(path.choice).parameters())
    trained = sum(p.numel() for p in net.weight_parameters() if p.grad is not None)
    assert trained < sum(p.numel() for p in net.weight_parameters())
    assert trained >= child_weights - 1  # sliced: grads live on the full tensors the slices came from


def test_hard_gumbel_draws_follow_the_softmax_and_gates_need_no_draw_change() -> None:
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5])
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    for _ in range(4000):
        counts[hard_gumbel(logits, 0.7, generator, gate=False)[0]] += 1
    torch.testing.assert_close(counts / 4000, torch.softmax(logits, 0), atol=0.03, rtol=0)
    with_gate = hard_gumbel(logits, 0.7, torch.Generator().manual_seed(3), gate=True)[0]
    without = hard_gumbel(logits, 0.7, torch.Generator().manual_seed(3), gate=False)[0]
    assert with_gate == without  # weight and architecture steps draw from the same noise alike


@pytest.mark.parametrize("cls", SUPERNETS, ids=["dmasking", "densenas"])
def test_sampled_paths_are_members_and_follow_sharp_logits(cls: type[Supernet]) -> None:
    net = cls(tiny_space())
    choice = _random_choice(net, random.Random(11))
    hot = net.one_hot(choice)
    widths = hot.widths if isinstance(net, DMaskingSupernet) else [*hot.paths[1:], hot.head_paths]
    with torch.no_grad():
        for logits, target in zip(net.arch_parameters(), [*sum(hot.ops, []), *widths, hot.resolution]):
            logits.copy_(target * 30)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        path = net.sample_path(1.0, generator)
        assert path.choice == choice and net.space.contains(net.arch(path.choice))


def test_choice_entropy_is_one_when_uniform_and_zero_when_decided() -> None:
    uniform = {"cells": [[[0.5, 0.5], [1 / 3] * 3]], "widths": [[0.25] * 4], "resolution": [0.5, 0.5]}
    decided = {"cells": [[[1.0, 0.0], [0.0, 1.0, 0.0]]], "widths": [[0, 0, 0, 1.0]], "resolution": [0.0, 1.0]}
    assert choice_entropy(uniform)["mean"] == pytest.approx(1.0)
    assert choice_entropy(decided)["max"] == pytest.approx(0.0)
    assert choice_entropy(uniform)["cells"] == [[pytest.approx(1.0), pytest.approx(1.0)]]


@pytest.mark.parametrize("cls", [DMaskingSupernet, DenseNASSupernet], ids=["dmasking", "densenas"])
def test_log_probability_is_a_distribution_over_every_member(cls: type[Supernet]) -> None:
    net = cls(tiny_space())
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(generator=torch.Generator().manual_seed(p.numel()))
    total = sum(net.log_probability(choice).exp() for choice in all_choices(net))
    assert total.item() == pytest.approx(1.0, abs=1e-5)
    drawn = net.sample_path(1.0, torch.Generator().manual_seed(0), gates=False).choice
    assert net.log_probability(drawn).item() < 0  # a real draw has a probability below 1
