"""The training recipe in one process: schedule, decay groups, EMA, resumable state, time budget."""

from __future__ import annotations

import math

import pytest
import torch

from deploy.recipe import Hyperparameters, Training, warm_ema
from deploy.retrain import _epochs_within
from pipeline.config import load_config
from spaces.arch import Arch

ARCH = Arch.parse("input=1x12 stem=cn_k3_c8_relu stages=ds_k3_c8_relu_nores|ir_k3_s2_e3_c12_relu "
                  "head=cn_k1_c32_relu classes=4")
HPARAMS = Hyperparameters(lr=0.1, weight_decay=1e-3, label_smoothing=0.1, augmentation=0.1)


def training(*overrides: str, epochs: int = 4, steps: int = 10) -> Training:
    recipe = load_config(None, ["retrain.batch_size=8", *overrides]).retrain
    return Training(ARCH, HPARAMS, recipe, epochs=epochs, steps_per_epoch=steps)


def data(n: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 12, 12, generator=generator), torch.randint(0, 4, (n,), generator=generator)


def test_learning_rate_warms_up_linearly_then_decays_to_zero_by_cosine() -> None:
    run = training("retrain.warmup_epochs=1", epochs=4, steps=10)
    assert [run.learning_rate(s) for s in (0, 4, 9)] == pytest.approx([0.01, 0.05, 0.1])
    assert run.learning_rate(10) == pytest.approx(0.1)  # the cosine starts at the peak
    assert run.learning_rate(25) == pytest.approx(0.05)  # half way through the 30 decay steps
    assert run.learning_rate(40) == pytest.approx(0.0, abs=1e-12) and run.learning_rate(99) == pytest.approx(0.0)
    plain = training(epochs=2, steps=10)
    assert plain.learning_rate(0) == 0.1 and plain.learning_rate(10) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 2)))


def test_weight_decay_applies_to_conv_and_linear_weights_only() -> None:
    decayed, plain = training().optimizer.param_groups
    assert decayed["weight_decay"] == 1e-3 and plain["weight_decay"] == 0.0
    assert all(p.ndim == 4 or p.ndim == 2 for p in decayed["params"]) and all(p.ndim == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(training().net.parameters()))


def test_the_ema_is_the_final_model_and_lags_the_trained_weights() -> None:
    x, y = data()
    run = training("retrain.ema_decay=0.9", steps=10)
    start = [p.detach().clone() for p in run.net.parameters()]
    run.run_epoch(x, y)
    assert run.steps == 10 and run.history[0]["lr"] == 0.1
    final = run.final_net()
    assert final is not run.net
    for ema, trained, first in zip(final.parameters(), run.net.parameters(), start):
        # an average of the visited weights lies between where training started and where it is now
        assert (ema - trained).norm() < (first - trained).norm()
    no_ema = training()
    assert no_ema.final_net() is no_ema.net


def test_the_ema_decay_ramps_up_to_the_set_value() -> None:
    averaged, update = [torch.zeros(3)], warm_ema(0.99)
    update(averaged, [torch.ones(3)], torch.tensor(0))  # first update: decay 1/10, mostly the new weights
    assert torch.allclose(averaged[0], torch.full((3,), 0.9))
    averaged = [torch.zeros(3)]
    update(averaged, [torch.ones(3)], torch.tensor(10_000))  # late: the set decay
    assert torch.allclose(averaged[0], torch.full((3,), 0.01))


def test_a_restored_state_continues_exactly_as_the_uninterrupted_run() -> None:
    x, y = data()
    recipe = ("retrain.ema_decay=0.9", "retrain.warmup_epochs=1", "retrain.flip_probability=0.5",
              "retrain.erasing_probability=0.5")
    straight = training(*recipe, epochs=3)
    for _ in range(3):
        straight.run_epoch(x, y)
    first = training(*recipe, epochs=3)
    first.run_epoch(x, y)
    state = first.state_dict()
    resumed = training(*recipe, epochs=3)
    resumed.load_state_dict(state)
    for _ in range(2):
        resumed.run_epoch(x, y)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    for ours, theirs in zip(resumed.final_net().state_dict().values(), straight.final_net().state_dict().values()):
        assert torch.equal(ours, theirs)


def test_the_time_budget_cuts_epochs_to_what_fits() -> None:
    assert _epochs_within(minutes=10, epochs=60, planned=60, seconds=[60]) == 10
    assert _epochs_within(minutes=10, epochs=6, planned=6, seconds=[60]) == 6  # fits: the configured epochs
    assert _epochs_within(minutes=0.5, epochs=6, planned=6, seconds=[60]) == 1  # the one already done


def test_the_plan_follows_the_pace_after_the_first_epoch() -> None:
    # A slow first epoch planned 10; later epochs at 40 s leave 600 - 60 - 3 * 40 = 420 s: 10 more.
    assert _epochs_within(minutes=10, epochs=60, planned=10, seconds=[60, 40, 40, 40]) == 14
    # One slow epoch does not move the pace (the median of those after the first).
    assert _epochs_within(minutes=10, epochs=60, planned=14, seconds=[60, 40, 90, 40]) == 13
    # Epochs slower than planned shorten it, never below the epochs done.
    assert _epochs_within(minutes=10, epochs=60, planned=10, seconds=[60, 200, 200]) == 3
