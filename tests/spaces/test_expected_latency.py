"""Expected latency of both supernets: one-hot equals the table's prediction, uniform equals the exact mean.

The algebra is checked on a table with made-up, distinct entries (so a wrong
entry, size or width shows up as a wrong sum); a real measured table is used
where the search runs under a latency budget.
"""

from __future__ import annotations

import random
import statistics

import pytest
import torch

from spaces.latency import LatencyKey, LatencyTable, MeasureSettings, MissingLatencyError, arch_keys
from spaces.search import SearchSettings, search
from spaces.supernet import (DenseNASSupernet, DMaskingSupernet, SpaceLatency, Supernet,
                             space_latency_keys)
from tests.spaces.tiny_space import all_choices, quadrant_data, tiny_space

FAST = MeasureSettings("torch", warmup=1, repeats=3)


def _made_up_table(without: LatencyKey | None = None) -> LatencyTable:
    """Distinct entries per key (all but ``without``), deterministic: ms = 0.01 + a seeded draw from [0, 1)."""
    rng = random.Random(0)
    entries = {k: 0.01 + rng.random() for k in space_latency_keys(tiny_space())}
    entries.pop(without, None)
    return LatencyTable(FAST, overhead_ms=0.005, entries=entries)


@pytest.fixture(scope="module")
def table() -> LatencyTable:
    return _made_up_table()


@pytest.fixture(scope="module", params=[DMaskingSupernet, DenseNASSupernet], ids=["dmasking", "densenas"])
def supernet(request: pytest.FixtureRequest) -> Supernet:
    return request.param(tiny_space())


def test_space_keys_cover_every_member() -> None:
    space, keys = tiny_space(), set(space_latency_keys(tiny_space()))
    rng = random.Random(1)
    for _ in range(200):
        assert set(arch_keys(space.sample(rng))) <= keys


def test_one_hot_expected_latency_equals_table_prediction(supernet: Supernet, table: LatencyTable) -> None:
    latency = SpaceLatency(supernet.space, table)
    choices = all_choices(supernet)
    for choice in random.Random(2).sample(choices, 40):
        expected = supernet.expected_latency(supernet.one_hot(choice), latency).item()
        assert expected == pytest.approx(table.predict(supernet.arch(choice)), rel=1e-6)


def test_uniform_expected_latency_is_the_mean_over_all_members(supernet: Supernet, table: LatencyTable) -> None:
    # Choice groups are independent (DenseNAS: uniform paths make every width tuple equally likely),
    # so the contraction is the exact expectation, not an effective-shape approximation.
    latency = SpaceLatency(supernet.space, table)
    mean = statistics.fmean(table.predict(supernet.arch(c)) for c in all_choices(supernet))
    assert supernet.expected_latency(supernet.mean_sample(), latency).item() == pytest.approx(mean, rel=1e-5)


def test_latency_gradients_reach_every_architecture_parameter(supernet: Supernet, table: LatencyTable) -> None:
    sample = supernet.sample(tau=1.0, generator=torch.Generator().manual_seed(0))
    for logits in supernet.arch_parameters():
        logits.grad = None
    supernet.expected_latency(sample, SpaceLatency(supernet.space, table)).backward()
    for logits in supernet.arch_parameters():
        assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_missing_entry_names_the_key_and_how_to_measure() -> None:
    missing = space_latency_keys(tiny_space())[7]
    with pytest.raises(MissingLatencyError, match="space_latency_keys") as err:
        SpaceLatency(tiny_space(), _made_up_table(without=missing))
    assert str(missing) in str(err.value)


def test_latency_budget_without_a_table_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a latency table"):
        search(tiny_space(), quadrant_data(n_train=32, n_val=16),
               SearchSettings(epochs=2, budget_metric="latency", target=1.0, cost_loss="hinge"))


def test_fbnet_loss_refuses_a_target_whose_log_is_not_positive() -> None:
    with pytest.raises(ValueError, match="microseconds"):
        SearchSettings(budget_metric="latency", target=0.001, cost_loss="fbnet")


@pytest.mark.parametrize("supernet_name", ["dmasking", "densenas"])
def test_latency_budget_pulls_expected_latency_down_on_a_measured_table(supernet_name: str) -> None:
    space = tiny_space()
    table = LatencyTable.create(FAST)
    table.ensure_keys(space_latency_keys(space))
    uniform = DMaskingSupernet(space) if supernet_name == "dmasking" else DenseNASSupernet(space)
    start = uniform.expected_latency(uniform.mean_sample(), SpaceLatency(space, table)).item()
    settings = SearchSettings(epochs=3, warmup_epochs=1, batch_size=32, arch_lr=0.1, finetune_epochs=0,
                              supernet=supernet_name, budget_metric="latency", target=start * 0.3,
                              cost_loss="hinge", cost_lambda=5.0)
    result = search(space, quadrant_data(n_train=128, n_val=64), settings, latency_table=table)
    assert result.expected_latency_ms < 0.9 * start
    assert result.predicted_latency_ms == pytest.approx(table.predict(result.arch))
    assert all(h["expected_latency_ms"] is not None for h in result.history)
