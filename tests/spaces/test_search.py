"""The bilevel search loop on a tiny space: determinism, resume, cost pressure, result fields."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from spaces.cost import arch_cost
from spaces.search import (SUPERNETS, CheckpointError, SearchResult, SearchSettings, cost_aware_loss, score_function,
                           score_term, search)
from tests.spaces.tiny_space import quadrant_data, tiny_space

SETTINGS = SearchSettings(epochs=3, warmup_epochs=1, batch_size=32, lr=0.1, arch_lr=0.05, finetune_epochs=1,
                          target=2e5, seed=0)


@pytest.fixture(scope="module")
def result():
    return search(tiny_space(), quadrant_data(n_train=256), SETTINGS)


def test_result_is_a_member_with_consistent_costs(result) -> None:
    space = tiny_space()
    assert space.contains(result.arch)
    assert result.cost == arch_cost(result.arch)
    assert 0.0 <= result.val_accuracy <= 1.0
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert result.history[0]["arch_loss"] is None and result.history[1]["arch_loss"] is not None
    probs = result.probabilities
    assert len(probs["cells"]) == len(space.stages) and len(probs["resolution"]) == len(space.resolutions)
    for stage in probs["cells"]:
        for layer in stage:
            assert sum(layer) == pytest.approx(1.0)


def test_learns_the_task(result) -> None:
    # quadrant brightness is trivially learnable: far above the 25% of chance
    assert result.val_accuracy > 0.6


def test_same_seed_same_search(result) -> None:
    again = search(tiny_space(), quadrant_data(n_train=256), SETTINGS)
    assert again.arch == result.arch and again.probabilities == result.probabilities


class _Stop(Exception):
    pass


def _stopped_after_epoch_1_then_resumed(settings: SearchSettings, checkpoint: Path, seen: list[int]) -> SearchResult:
    """A search interrupted after its second epoch, then resumed from ``checkpoint``; epochs reported go to
    ``seen``."""
    def stop_after_two(record: dict) -> None:
        seen.append(record["epoch"])
        if record["epoch"] == 1:
            raise _Stop

    with pytest.raises(_Stop):
        search(tiny_space(), quadrant_data(n_train=256), settings, checkpoint=checkpoint, on_epoch=stop_after_two)
    return search(tiny_space(), quadrant_data(n_train=256), settings, checkpoint=checkpoint,
                  on_epoch=lambda r: seen.append(r["epoch"]))


def test_resume_from_checkpoint_matches_uninterrupted(tmp_path: Path, result) -> None:
    seen: list[int] = []
    resumed = _stopped_after_epoch_1_then_resumed(SETTINGS, tmp_path / "search.pt", seen)
    assert seen == [0, 1, 2]
    assert resumed.arch == result.arch and resumed.probabilities == result.probabilities


def test_checkpoint_of_another_space_is_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "search.pt"
    search(tiny_space(), quadrant_data(n_train=256), SearchSettings(**{**SETTINGS.__dict__, "epochs": 2}),
           checkpoint=checkpoint)
    other = tiny_space().adapted(in_channels=1, num_classes=4, resolutions=(12,))
    with pytest.raises(ValueError, match="another format, search space or supernet"):
        search(other, quadrant_data(n_train=256), SETTINGS, checkpoint=checkpoint)
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        search(tiny_space(), quadrant_data(n_train=256), SETTINGS, checkpoint=checkpoint)
    torch.save([1, 2, 3], checkpoint)  # loadable with weights_only, but no checkpoint
    with pytest.raises(CheckpointError, match="holds a list, not a search checkpoint; delete it"):
        search(tiny_space(), quadrant_data(n_train=256), SETTINGS, checkpoint=checkpoint)


def test_a_tight_budget_gives_a_cheaper_architecture() -> None:
    cheap = search(tiny_space(), quadrant_data(n_train=256), SearchSettings(**{**SETTINGS.__dict__, "target": 2e4,
                                                                     "cost_loss": "hinge", "cost_lambda": 20.0}))
    rich = search(tiny_space(), quadrant_data(n_train=256), SearchSettings(**{**SETTINGS.__dict__, "target": 1e8,
                                                                    "cost_loss": "hinge"}))
    assert cheap.expected_madds < rich.expected_madds


@pytest.mark.parametrize("kind", ["fbnet", "hinge"])
def test_cost_aware_loss_increases_with_cost(kind: str) -> None:
    settings = SearchSettings(cost_loss=kind, target=1e6)
    ce = torch.tensor(1.0)
    low, high = (cost_aware_loss(ce, torch.tensor(c), settings) for c in (5e5, 4e6))
    assert high > low
    if kind == "hinge":
        assert low.item() == pytest.approx(1.0)  # below target: no penalty
        assert high.item() == pytest.approx(1.0 + 3.0)
    else:
        assert low.item() == pytest.approx((torch.log(torch.tensor(5e5)) / torch.log(torch.tensor(1e6))).item()
                                           ** 0.6)


def test_score_function_has_the_loss_value_and_the_reinforce_gradient() -> None:
    logits = torch.tensor([0.3, -0.2, 0.5], requires_grad=True)
    log_p = torch.log_softmax(logits, 0)[2]
    surrogate = score_function(1.5, log_p, baseline=1.2)
    assert surrogate.item() == pytest.approx(1.5)
    surrogate.backward()
    expected = 0.3 * (torch.eye(3)[2] - torch.softmax(logits.detach(), 0))  # (ce - b) * d log p / d logits
    torch.testing.assert_close(logits.grad, expected)
    logits.grad = None
    term = score_term(1.5, torch.log_softmax(logits, 0)[2], baseline=1.2)  # the same gradient, no value
    assert term.item() == 0
    term.backward()
    torch.testing.assert_close(logits.grad, expected)


@pytest.mark.parametrize("supernet", ["dmasking", "densenas"])
def test_only_the_score_function_gives_the_resolution_an_accuracy_gradient(supernet: str) -> None:
    """The straight-through gate scales the input, which the stem's BatchNorm normalises away."""
    torch.manual_seed(0)
    net = SUPERNETS[supernet](tiny_space())
    net.train()
    data = quadrant_data(n_train=64)
    path = net.sample_path(1.0, torch.Generator().manual_seed(0), gates=True)
    F.cross_entropy(net(data.x_val[:32], path), data.y_val[:32]).backward()
    assert net.resolution_logits.grad.abs().max() < 1e-5
    net.zero_grad(set_to_none=True)
    with torch.no_grad():
        ce = F.cross_entropy(net(data.x_val[:32], path), data.y_val[:32]).item()
    score_function(ce, net.log_probability(path.choice), baseline=ce - 0.5).backward()
    assert net.resolution_logits.grad.abs().max() > 0.01


@pytest.mark.parametrize("estimator, weight_resolution",
                         [("reinforce", "learned"), ("hybrid", "learned"), ("hybrid", "uniform")])
def test_score_function_searches_learn_within_budget_and_resume_exactly(tmp_path: Path, result, estimator: str,
                                                                         weight_resolution: str) -> None:
    settings = SearchSettings(**{**SETTINGS.__dict__, "arch_gradient": estimator,
                                 "weight_resolution": weight_resolution})
    whole = search(tiny_space(), quadrant_data(n_train=256), settings)
    assert whole.cost.madds <= settings.target and whole.val_accuracy > 0.6
    # another estimator of the resolution, another resolution distribution than the gates'
    assert whole.probabilities["resolution"] != result.probabilities["resolution"]

    resumed = _stopped_after_epoch_1_then_resumed(settings, tmp_path / "search.pt", [])
    assert resumed.arch == whole.arch and resumed.probabilities == whole.probabilities
    if weight_resolution == "uniform":  # the weight steps trained other resolutions than the learned draws'
        learned = search(tiny_space(), quadrant_data(n_train=256), replace(settings, weight_resolution="learned"))
        assert whole.probabilities["resolution"] != learned.probabilities["resolution"]


@pytest.mark.parametrize("settings", [dict(arch_gradient="reinforce"), dict(arch_gradient="hybrid"),
                                      dict(weight_resolution="uniform")])
def test_path_drawing_settings_need_single_path(settings: dict) -> None:
    with pytest.raises(ValueError, match="needs sampling='single_path'"):
        SearchSettings(**settings, sampling="relaxed")


def test_uniform_weight_resolution_draws_every_resolution_from_the_same_noise() -> None:
    net = SUPERNETS["dmasking"](tiny_space())
    resolutions = len(net.space.resolutions)
    with torch.no_grad():  # a collapsed distribution: the learned draw never leaves resolution 0
        net.resolution_logits.copy_(torch.tensor([30.0] + [-30.0] * (resolutions - 1)))

    def draws(uniform: bool) -> list:
        generator = torch.Generator().manual_seed(0)
        return [net.sample_path(1.0, generator, gates=False, uniform_resolution=uniform).choice for _ in range(64)]

    learned, uniform = draws(False), draws(True)
    assert {c.resolution for c in learned} == {0}
    assert {c.resolution for c in uniform} == set(range(resolutions))
    assert [(c.cells, c.widths) for c in uniform] == [(c.cells, c.widths) for c in learned]
