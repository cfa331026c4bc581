"""Supernet properties (DMasking and DenseNAS): one-hot equals the child, cost is exact and differentiable."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from spaces.cost import arch_cost
from spaces.supernet import (ArchChoice, DenseNASSupernet, DMaskingSupernet, Supernet, channel_mask, gumbel_softmax,
                             resize_input, temperature)
from tests.spaces.tiny_space import tiny_space


def _random_choice(net: Supernet, rng: random.Random) -> ArchChoice:
    space = net.space
    return ArchChoice(
        cells=tuple(tuple(rng.randrange(len(st.choices(i))) for i in range(len(st.layers))) for st in space.stages),
        widths=tuple(rng.randrange(len(st.widths)) for st in space.stages),
        resolution=rng.randrange(len(space.resolutions)))


@pytest.fixture(scope="module", params=[DMaskingSupernet, DenseNASSupernet], ids=["dmasking", "densenas"])
def supernet(request: pytest.FixtureRequest) -> Supernet:
    torch.manual_seed(0)
    net = request.param(tiny_space())
    for module in net.modules():  # non-trivial BN so that eval-mode equality means something
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


@pytest.mark.parametrize("seed", range(12))
def test_one_hot_expected_cost_equals_exact_cost_of_derived_arch(supernet: Supernet, seed: int) -> None:
    choice = _random_choice(supernet, random.Random(seed))
    madds, params = supernet.expected_cost(supernet.one_hot(choice))
    exact = arch_cost(supernet.arch(choice))
    assert round(madds.item()) == exact.madds and round(params.item()) == exact.params


@pytest.mark.parametrize("seed", range(12))
def test_one_hot_supernet_output_equals_inherited_child(supernet: Supernet, seed: int) -> None:
    choice = _random_choice(supernet, random.Random(seed))
    arch = supernet.arch(choice)
    child = supernet.child(choice).eval()
    x = torch.randn(3, 1, 12, 12, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = child(resize_input(x, arch.input_size))
        got = supernet(x, supernet.one_hot(choice))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_cost_gradients_reach_every_architecture_parameter(supernet: Supernet) -> None:
    sample = supernet.sample(tau=1.0, generator=torch.Generator().manual_seed(0))
    madds, params = supernet.expected_cost(sample)
    for logits in supernet.arch_parameters():
        logits.grad = None
    (madds + params).backward()
    for logits in supernet.arch_parameters():
        assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_masked_conv_with_one_hot_width_equals_plain_conv_of_that_width() -> None:
    torch.manual_seed(0)
    widths, x = [4, 8, 12], torch.randn(2, 3, 6, 6)
    wide = nn.Conv2d(3, 12, 3, padding=1)
    for i, width in enumerate(widths):
        narrow = nn.Conv2d(3, width, 3, padding=1)
        narrow.weight.data.copy_(wide.weight.data[:width])
        narrow.bias.data.copy_(wide.bias.data[:width])
        mask = channel_mask(widths, nn.functional.one_hot(torch.tensor(i), 3).float(), 12)
        masked = wide(x) * mask[None, :, None, None]
        torch.testing.assert_close(masked[:, :width], narrow(x))
        assert masked[:, width:].abs().sum() == 0


def test_soft_mask_expected_width() -> None:
    weights = torch.tensor([0.2, 0.3, 0.5])
    mask = channel_mask([2, 4, 8], weights, 8)
    assert mask.tolist() == pytest.approx([1, 1, 0.8, 0.8, 0.5, 0.5, 0.5, 0.5])
    assert mask.sum().item() == pytest.approx(0.2 * 2 + 0.3 * 4 + 0.5 * 8)


def test_soft_sample_cost_lies_between_extremes(supernet: Supernet) -> None:
    sample = supernet.mean_sample()  # zero logits: uniform weights
    madds, _ = supernet.expected_cost(sample)
    costs = [arch_cost(supernet.arch(_random_choice(supernet, random.Random(i)))).madds for i in range(200)]
    assert min(costs) < madds.item() < max(costs)


def test_gumbel_and_temperature() -> None:
    logits = torch.tensor([0.0, 2.0, -1.0])
    g1 = gumbel_softmax(logits, 0.5, torch.Generator().manual_seed(3))
    g2 = gumbel_softmax(logits, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(g1, g2) and g1.sum().item() == pytest.approx(1.0)
    assert temperature(0, 5.0, 0.5) == pytest.approx(5.0) and temperature(1, 5.0, 0.5) == pytest.approx(0.5)
    assert temperature(0.5, 5.0, 0.5) == pytest.approx((5.0 * 0.5) ** 0.5)


def test_derive_follows_the_largest_logits(supernet: Supernet) -> None:
    choice = _random_choice(supernet, random.Random(99))
    net = type(supernet)(tiny_space())
    hot = net.one_hot(choice)
    widths = hot.widths if isinstance(net, DMaskingSupernet) else [*hot.paths[1:], hot.head_paths]
    with torch.no_grad():
        for logits, target in zip(net.arch_parameters(), [*sum(hot.ops, []), *widths, hot.resolution]):
            logits.copy_(target * 3)
    assert net.derive() == choice
    assert net.space.contains(net.arch(choice))


def test_densenas_viterbi_takes_the_most_probable_whole_path() -> None:
    net = DenseNASSupernet(tiny_space())  # stage widths: (8, 12) then (12, 16, 24)
    with torch.no_grad():
        # stage 1 blocks prefer, per column, a different incoming block; the head prefers block 2 weakly.
        net.path_logits[0].copy_(torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 4.0]]))
        net.head_logits.copy_(torch.tensor([0.0, 0.2, 0.3]))
    paths, head = net._paths()
    best = max(((a, b) for a in range(2) for b in range(3)), key=lambda ab: (paths[1][ab[0], ab[1]] * head[ab[1]]).item())
    assert net.derive().widths == best
    marginals = net.probabilities()["widths"]
    assert [sum(m) for m in marginals] == pytest.approx([1.0, 1.0])


def test_search_runs_with_either_supernet() -> None:
    from spaces.search import SearchSettings, search
    from tests.spaces.tiny_space import quadrant_data

    result = search(tiny_space(), quadrant_data(n_train=64, n_val=32),
                    SearchSettings(epochs=2, warmup_epochs=1, batch_size=32, finetune_epochs=0, supernet="densenas"))
    assert tiny_space().contains(result.arch) and result.cost == arch_cost(result.arch)
