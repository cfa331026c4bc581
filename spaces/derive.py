"""Derivation that lands on the budget: sample from the learned distribution, keep what fits, rank.

The most probable architecture of a supernet can lie over the budget (the cost
loss bounds the *expected* cost, not the argmax's) or far under it. As FBNet
does, the search instead draws architectures from ``P_theta``, keeps those whose
cost on the budget metric lies in ``[(1 - window) * target, target]`` — or, when
none does, at most ``target`` — and ranks a few of them (the most probable one
first, when it qualifies) by the accuracy they reach on validation images with
inherited weights and recalibrated BatchNorm statistics, or after a few
training steps (``proxy``): from those weights (``few_shot``), or from a fresh
initialisation (``scratch``: how fast the candidate itself learns, which the
shared weights cannot say; docs/supernet-benchmarks.md measures each proxy
against the candidates trained alone). With ``keep_resolution`` only draws at
the most probable architecture's input resolution are ranked: the trained
proxies are blind to the resolution (measured), so the distribution decides it
and the proxy the rest.
Only when no sample fits at all does the cheapest one win, and the result says
it is over budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from spaces.budget import budget_cost
from spaces.latency import LatencyTable
from spaces.modules import ChildNet
from spaces.supernet import ArchChoice, Supernet, resize_input
from spaces.training import CALIBRATION_IMAGES, evaluate, recalibrate_bn, train_steps

__all__ = ["PROXIES", "Candidate", "FineTuning", "Proxy", "derive_on_budget", "inherited_accuracy",
           "tuned_accuracy"]


Proxy = Literal["inherited", "few_shot", "scratch"]
PROXIES: tuple[Proxy, ...] = get_args(Proxy)


@dataclass(frozen=True)
class Candidate:
    """One architecture the derivation considered, with its cost and (if ranked) inherited accuracy."""

    choice: ArchChoice | None  # None once read back from a record (only the derivation itself needs it)
    arch: str
    cost: float
    accuracy: float | None = None  # what it was ranked by (the derivation's proxy)
    inherited: float | None = None  # inherited accuracy, kept beside another proxy's to compare the two

    def to_dict(self) -> dict:
        record = {"arch": self.arch, "cost": self.cost, "accuracy": self.accuracy}
        return record if self.inherited is None else {**record, "inherited": self.inherited}

    @classmethod
    def from_dict(cls, data: dict) -> Candidate:
        return cls(None, data["arch"], data["cost"], data.get("accuracy"), data.get("inherited"))


@dataclass(frozen=True)
class FineTuning:
    """SGD (momentum 0.9) steps a child takes before it is validated (from inherited weights or a fresh init)."""

    steps: int
    lr: float
    batch_size: int
    weight_decay: float
    seed: int  # the batch order (every candidate sees the same batches) and a fresh child's init


def inherited_accuracy(net: Supernet, choice: ArchChoice, x_train: torch.Tensor, x_val: torch.Tensor,
                       y_val: torch.Tensor, calibration_images: int = CALIBRATION_IMAGES) -> float:
    """Validation accuracy of the child with the supernet's weights, BN statistics re-estimated."""
    arch = net.arch(choice)
    child = net.child(choice)
    recalibrate_bn(child, resize_input(x_train[:calibration_images], arch.input_size))
    return evaluate(child, resize_input(x_val, arch.input_size), y_val)


def tuned_accuracy(child: nn.Module, input_size: int, x_train: torch.Tensor, y_train: torch.Tensor,
                   x_val: torch.Tensor, y_val: torch.Tensor, tuning: FineTuning) -> float:
    """Train ``child`` for ``tuning.steps`` (data-parallel), re-estimate its BN statistics, validate it."""
    x_train, x_val = resize_input(x_train, input_size), resize_input(x_val, input_size)
    child.to(memory_format=torch.channels_last)
    params = list(child.parameters())
    optimizer = torch.optim.SGD(params, lr=tuning.lr, momentum=0.9, weight_decay=tuning.weight_decay)
    child.train()
    train_steps(child, params, optimizer, x_train, y_train, tuning.batch_size,
                torch.Generator().manual_seed(tuning.seed), tuning.steps)
    recalibrate_bn(child, x_train[:CALIBRATION_IMAGES])
    return evaluate(child, x_val, y_val)


def _scored(net: Supernet, candidate: Candidate, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
            y_val: torch.Tensor, proxy: Proxy, tuning: FineTuning | None) -> Candidate:
    inherited = inherited_accuracy(net, candidate.choice, x_train, x_val, y_val)
    if proxy == "inherited":
        return Candidate(candidate.choice, candidate.arch, candidate.cost, inherited)
    if tuning is None:
        raise ValueError(f"proxy={proxy!r} trains each candidate and needs its tuning")
    arch = net.arch(candidate.choice)
    if proxy == "scratch":
        with torch.random.fork_rng():  # the same initialisation on every rank, without reseeding the caller
            torch.manual_seed(tuning.seed)
            child = ChildNet(arch)
    else:
        child = net.child(candidate.choice)
    tuned = tuned_accuracy(child, arch.input_size, x_train, y_train, x_val, y_val, tuning)
    return Candidate(candidate.choice, candidate.arch, candidate.cost, tuned, inherited)


def derive_on_budget(net: Supernet, metric: str, target: float, x_train: torch.Tensor, y_train: torch.Tensor,
                     x_val: torch.Tensor, y_val: torch.Tensor, *, samples: int = 256, ranked: int = 8,
                     window: float = 0.1, table: LatencyTable | None = None, proxy: Proxy = "inherited",
                     tuning: FineTuning | None = None, keep_resolution: bool = False,
                     seed: int = 0) -> tuple[ArchChoice, list[Candidate]]:
    """The derived choice and the candidates ranked for it (best first).

    ``samples`` draws from the logits' distribution (seeded: every data-parallel rank
    draws the same); ``ranked`` of those that fit are scored by ``proxy``:
    :func:`inherited_accuracy`, or :func:`tuned_accuracy` after ``tuning`` from the
    inherited weights (``few_shot``) or from a fresh initialisation (``scratch``);
    with ``keep_resolution`` only those at the most probable choice's resolution
    (all that fit, if none does there). When no draw lands in the window below the
    target, as many again are drawn at uniformly drawn resolutions before settling for
    any draw under it. ``ranked=0`` returns the most probable choice unscored.
    """
    most_probable = net.derive()
    if ranked == 0:
        return most_probable, []
    generator = torch.Generator().manual_seed(seed)
    seen: dict[str, Candidate] = {}

    def drawn(uniform_resolution: bool) -> list[ArchChoice]:
        with torch.no_grad():
            return [net.sample_path(1.0, generator, gates=False, uniform_resolution=uniform_resolution).choice
                    for _ in range(samples)]

    def in_window_after(choices: list[ArchChoice]) -> list[Candidate]:
        for choice in choices:
            arch = net.arch(choice)
            key = arch.encode()
            if key not in seen:
                seen[key] = Candidate(choice, key, budget_cost(arch, metric, table))
        return [c for c in seen.values() if (1 - window) * target <= c.cost <= target]

    # a distribution collapsed on a resolution where its widths all fall below the window: the same
    # cells and widths at the other resolutions reach it (rather than a child at a fraction of the budget)
    fitting = (in_window_after([most_probable, *drawn(False)]) or in_window_after(drawn(True))
               or [c for c in seen.values() if c.cost <= target])
    if not fitting:
        return min(seen.values(), key=lambda c: c.cost).choice, []
    if keep_resolution:
        fitting = [c for c in fitting if c.choice.resolution == most_probable.resolution] or fitting
    scored = [_scored(net, c, x_train, y_train, x_val, y_val, proxy, tuning) for c in fitting[:ranked]]
    scored.sort(key=lambda c: -c.accuracy)  # stable: ties keep the more probable (earlier drawn) one
    return scored[0].choice, scored
