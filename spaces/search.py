"""The bilevel supernet search loop: weights on train, architecture on val.

Single path (the default, ``sampling="single_path"``): every step draws one
discrete architecture from the logits (hard Gumbel-softmax, GDAS) and computes
only that child — its cells, route, resolution and sliced widths — so a step
costs about one child (``benchmarks/bench_supernet_step.py``). After
``warmup_epochs`` of weights only, every weight step on a train batch is followed
by an architecture step on a val batch: the sampled child's cross-entropy reaches
the logits through straight-through gates, and the cost-aware loss — FBNet's
``CE * (log cost / log target) ** beta`` or the hinge ``CE + lambda * relu(cost /
target - 1)`` — prices the *expected* cost of the logits' distribution (MAdds,
params or latency in ms from a lookup table; latency enters FBNet's log form in
microseconds, so that the log stays positive for sub-millisecond networks).
How the sampled path's cross-entropy reaches the logits (``arch_gradient``):
``"straight_through"`` (GDAS) multiplies each chosen op's output, and the input
at the chosen resolution, by a gate whose backward is the relaxed sample's; but
BatchNorm after a gated tensor normalises the scale away, so the resolution
logits and every layer that feeds a convolution rather than a residual sum get
no gradient from accuracy at all (measured: ~1e-7 against ~1e-3), and only the
cost term moves them. ``"reinforce"`` is the score-function estimator: the arch
step runs the path without a graph and the logits get ``(CE - baseline) *
grad log P(path)``, a moving-average baseline (ENAS; ProxylessNAS's REINFORCE
variant), which reaches every choice and costs no backward pass through the net.
``"hybrid"`` keeps the gates for the cells and widths and adds the score
function for the resolution alone, the one choice of every path whose gate
BatchNorm always undoes (same baseline).
The weight steps train the paths drawn from the logits; ``weight_resolution=
"uniform"`` draws their resolution uniformly instead, so that a score function
on the resolution compares resolutions whose weights trained alike: drawn from
the logits, the resolution ahead trains more, scores better and gains more
(a search's P(resolution) collapses within a few epochs on whichever led early,
and a weight pool trained at one resolution votes for it again; docs/search.md).
``sampling="relaxed"`` runs the whole Gumbel-softmax mixture instead (FBNetV2
masking at the max width and resolution), several times a child's cost. The
temperature decays exponentially per step.

The architecture is derived on the budget (:mod:`spaces.derive`): candidates drawn
from the learned distribution that fit the target are ranked by inherited
accuracy; the winner is fine-tuned briefly and validated, and that accuracy is
what the search reports, with every choice's entropy (how decided it is).

The same code runs in one process or data-parallel under ``torch.distributed``
(gloo on CPU, as Ray Train runs it; :mod:`spaces.training`): every rank takes its
slice of the same global batch, gradients are averaged in one all-reduce, and
the Gumbel noise comes from a generator seeded identically on every rank, so all
ranks sample the same path and keep identical logits. Only rank 0 writes
checkpoints.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal, get_args

import torch
import torch.nn.functional as F

from spaces.arch import Arch
from spaces.atomic import write_atomically
from spaces.budget import recorded_cost
from spaces.cost import Cost, arch_cost
from spaces.derive import PROXIES, Candidate, FineTuning, Proxy, derive_on_budget, tuned_accuracy
from spaces.errors import UserError
from spaces.evidence import CellEffects, cell_effects
from spaces.latency import LatencyTable
from spaces.space import SearchSpace
from spaces.supernet import ArchChoice, DenseNASSupernet, DMaskingSupernet, SpaceLatency, Supernet, temperature
from spaces.training import (average_buffers, average_gradients, cycle, rank_mean, steps_per_epoch, train_epoch,
                             world)

__all__ = ["ARCH_GRADIENTS", "RESOLUTION_LEARNING_GRADIENTS", "DERIVED_FIELDS", "CheckpointError", "SearchData",
           "SearchSettings", "SearchResult", "WarmStart", "choice_entropy", "cost_aware_loss", "read_checkpoint",
           "score_function", "score_term", "search"]

CHECKPOINT_FORMAT = "autospace-search-checkpoint/1"
REINFORCE_MOMENTUM = 0.9
"""Weight of the old value in the moving-average baseline of :func:`score_function`."""
ArchGradient = Literal["straight_through", "reinforce", "hybrid"]
ARCH_GRADIENTS: tuple[ArchGradient, ...] = get_args(ArchGradient)
# the estimators through which the accuracy reaches the resolution's logits (the gates' never does: BN undoes it)
RESOLUTION_LEARNING_GRADIENTS: tuple[ArchGradient, ...] = ("reinforce", "hybrid")
DERIVED_FIELDS = ("arch", "val_accuracy", "madds", "params", "predicted_latency_ms")
"""The keys of :meth:`SearchResult.derived`, in order (a failed search's record has them all None)."""


class CheckpointError(UserError):
    """A search checkpoint is unreadable or belongs to another search; the message says what to do."""


SUPERNETS: dict[str, type[Supernet]] = {"dmasking": DMaskingSupernet, "densenas": DenseNASSupernet}


@dataclass(frozen=True)
class SearchSettings:
    """Everything the search loop needs; the pipeline builds it from its config."""

    epochs: int = 4
    warmup_epochs: int = 1
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 4e-5
    arch_lr: float = 0.01
    cost_loss: Literal["fbnet", "hinge"] = "hinge"
    cost_beta: float = 0.6
    cost_lambda: float = 1.0
    tau_start: float = 5.0
    tau_end: float = 0.5
    finetune_epochs: int = 1
    seed: int = 0
    supernet: Literal["dmasking", "densenas"] = "dmasking"
    budget_metric: Literal["madds", "params", "latency"] = "madds"
    target: float = 5e6
    sampling: Literal["single_path", "relaxed"] = "single_path"
    arch_gradient: ArchGradient = "straight_through"
    derive_ranked: int = 8
    derive_samples: int = 256
    derive_window: float = 0.1
    derive_proxy: Proxy = "inherited"
    derive_proxy_steps: int = 50
    derive_keep_resolution: bool = False
    weight_resolution: Literal["learned", "uniform"] = "learned"
    evidence_samples: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.derive_window < 1:
            raise ValueError(f"derive_window={self.derive_window} must be in [0, 1): the share below the target "
                             "a derived architecture should land in")
        if min(self.derive_ranked, self.derive_samples, self.derive_proxy_steps, self.evidence_samples) < 0:
            raise ValueError("derive_ranked, derive_samples, derive_proxy_steps and evidence_samples must be >= 0")
        if self.derive_proxy not in PROXIES:
            raise ValueError(f"derive_proxy={self.derive_proxy!r} is not one of {', '.join(PROXIES)}")
        if self.weight_resolution == "uniform" and self.sampling != "single_path":
            raise ValueError("weight_resolution='uniform' draws the weight steps' paths and needs "
                             "sampling='single_path'")
        if self.arch_gradient != "straight_through" and self.sampling != "single_path":
            raise ValueError(f"arch_gradient={self.arch_gradient!r} scores sampled paths and needs "
                             "sampling='single_path'")
        if self.cost_loss == "fbnet" and self.target * _log_unit(self.budget_metric) <= 1:
            unit = "microseconds" if self.budget_metric == "latency" else self.budget_metric
            raise ValueError(f"target={self.target:g} is too small for the fbnet loss: log(target) in {unit} must be "
                             "positive; use cost_loss='hinge' or a larger target")


def _log_unit(metric: str) -> float:
    """Scale of the cost inside FBNet's log: latency in microseconds, counts as they are."""
    return 1e3 if metric == "latency" else 1.0


@dataclass(frozen=True)
class SearchData:
    """Normalised images at the data set's native resolution, and labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


@dataclass(frozen=True)
class WarmStart:
    """What an earlier search learned, to start this one from (AutoSpace's continuity across generations).

    ``weights``: a weight pool (:meth:`Supernet.cell_weights`) whose cells, stem and head
    this supernet loads where it offers them; ``cell_logits``: per stage, layer and
    choice, the op logits to start from (a prior from the cells' fitness).
    """

    weights: dict[str, dict[str, torch.Tensor]] | None = None
    cell_logits: list[list[list[float]]] | None = None


@dataclass
class SearchResult:
    """What a search returns: the derived architecture, its costs and accuracy, and the evidence.

    It is the typed seam between the search and everything that reads it (the
    evolution's fitness and reward, tracking, reports): they read these fields, and
    "its cost on the budget metric" only through :meth:`cost_on`. On disk and across
    processes it is :meth:`to_dict`, read back with :meth:`from_dict`.
    """

    arch: Arch
    cost: Cost
    val_accuracy: float
    choice: ArchChoice | None = None
    expected_madds: float | None = None
    expected_params: float | None = None
    probabilities: dict = field(default_factory=dict)
    expected_latency_ms: float | None = None
    predicted_latency_ms: float | None = None  # the run's latency table on the derived arch (budget runtime, batch 1)
    entropy: dict = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)
    cell_effects: CellEffects | None = None
    warm_started: int = 0
    val_images: int = 0
    history: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0

    def cost_on(self, metric: str) -> float:
        """The derived architecture's cost on the budget metric (:mod:`spaces.budget`)."""
        return recorded_cost(self.derived(), metric)

    def derived(self) -> dict:
        """The derived architecture's record: what the generation reports, the Pareto front and the summary show."""
        return {"arch": self.arch.encode(), "val_accuracy": self.val_accuracy, **self.cost.to_dict(),
                "predicted_latency_ms": self.predicted_latency_ms}

    def to_dict(self) -> dict:
        return {"arch": self.arch.encode(), "choice": asdict(self.choice) if self.choice is not None else None,
                **self.cost.to_dict(),
                "expected_madds": self.expected_madds, "expected_params": self.expected_params,
                "val_accuracy": self.val_accuracy, "expected_latency_ms": self.expected_latency_ms,
                "predicted_latency_ms": self.predicted_latency_ms, "probabilities": self.probabilities,
                "entropy": self.entropy, "candidates": [c.to_dict() for c in self.candidates],
                "cell_effects": self.cell_effects.to_dict() if self.cell_effects is not None else None,
                "warm_started": self.warm_started, "val_images": self.val_images, "history": self.history,
                "wall_seconds": self.wall_seconds}

    @classmethod
    def from_dict(cls, data: dict) -> SearchResult:
        """The result :meth:`to_dict` wrote (a results.json entry, a summary's final search)."""
        choice = data.get("choice")
        effects = data.get("cell_effects")
        return cls(arch=Arch.parse(data["arch"]), cost=Cost(data["madds"], data["params"]),
                   val_accuracy=data["val_accuracy"],
                   choice=None if choice is None else ArchChoice(tuple(tuple(c) for c in choice["cells"]),
                                                                 tuple(choice["widths"]), choice["resolution"]),
                   expected_madds=data.get("expected_madds"), expected_params=data.get("expected_params"),
                   probabilities=data.get("probabilities") or {}, expected_latency_ms=data.get("expected_latency_ms"),
                   predicted_latency_ms=data.get("predicted_latency_ms"), entropy=data.get("entropy") or {},
                   candidates=[Candidate.from_dict(c) for c in data.get("candidates") or []],
                   cell_effects=None if effects is None else CellEffects.from_dict(effects),
                   warm_started=data.get("warm_started", 0), val_images=data.get("val_images", 0),
                   history=data.get("history") or [], wall_seconds=data.get("wall_seconds", 0.0))


def choice_entropy(probabilities: dict) -> dict:
    """Entropy of every choice, normalised to [0, 1] (1 = uniform, 0 = decided), as in ``probabilities``."""
    def normalised(p: list[float]) -> float:
        if len(p) < 2:
            return 0.0
        return -sum(q * math.log(q) for q in p if q > 0) / math.log(len(p))

    cells = [[normalised(layer) for layer in stage] for stage in probabilities["cells"]]
    widths = [normalised(w) for w in probabilities["widths"]]
    flat = [*sum(cells, []), *widths, normalised(probabilities["resolution"])]
    return {"cells": cells, "widths": widths, "resolution": flat[-1], "mean": sum(flat) / len(flat),
            "max": max(flat)}


def moving_baseline(baseline: float | None, value: float) -> float:
    """The score-function estimators' baseline: a moving average of the arch steps' CE (the first sets it)."""
    return value if baseline is None else REINFORCE_MOMENTUM * baseline + (1 - REINFORCE_MOMENTUM) * value


def score_function(ce: float, log_probability: torch.Tensor, baseline: float) -> torch.Tensor:
    """The sampled path's loss as REINFORCE sees it: value ``ce``, gradient ``(ce - baseline) * grad log P``.

    Dropped into :func:`cost_aware_loss` in place of a differentiable CE, so every
    cost form composes with it (FBNet's product rule included).
    """
    return ce + score_term(ce, log_probability, baseline)


def score_term(ce: float, log_probability: torch.Tensor, baseline: float) -> torch.Tensor:
    """Zero in value, ``(ce - baseline) * grad log P`` in gradient: REINFORCE added to a differentiable loss
    (the hybrid estimator's resolution term)."""
    return (ce - baseline) * (log_probability - log_probability.detach())


def cost_aware_loss(ce: torch.Tensor, cost: torch.Tensor, settings: SearchSettings) -> torch.Tensor:
    """The search's architecture loss; both forms penalise expected cost above the target."""
    if settings.cost_loss == "fbnet":
        unit = _log_unit(settings.budget_metric)
        return ce * (torch.log(cost * unit) / math.log(settings.target * unit)) ** settings.cost_beta
    return ce + settings.cost_lambda * F.relu(cost / settings.target - 1)


def read_checkpoint(path: Path, kind: str, restart: str, matches: Callable[[dict], bool],
                    mismatch: Callable[[dict], str]) -> dict:
    """A ``kind`` checkpoint (a dict, read with ``weights_only``) that ``matches`` what resumes from it.

    Raises:
        CheckpointError: the file is unreadable, not a checkpoint dict, or another run's
            (``mismatch(state)`` says whose); the message says to delete it to ``restart``.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or foreign file: say which and what to do
        raise CheckpointError(f"{kind} checkpoint {path} cannot be read ({err}); delete it to {restart}") from None
    if not isinstance(state, dict):  # weights_only loads plain lists and tensors too
        raise CheckpointError(f"{kind} checkpoint {path} holds a {type(state).__name__}, not a {kind} checkpoint; "
                              f"delete it to {restart}")
    if not matches(state):
        raise CheckpointError(f"{kind} checkpoint {path} {mismatch(state)}")
    return state


def _load_checkpoint(path: Path, space: SearchSpace, supernet: str) -> dict:
    return read_checkpoint(
        path, "search", "start the search over",
        lambda state: (state.get("format") == CHECKPOINT_FORMAT and state.get("space") == space.to_dict()
                       and state.get("supernet") == supernet),
        lambda state: "belongs to another format, search space or supernet; delete it or point the search at a "
                      "fresh directory")


class _Pricing:
    """The cost the architecture loss penalises, and the expected costs a search reports."""

    def __init__(self, net: Supernet, metric: str, table: LatencyTable | None) -> None:
        if metric == "latency" and table is None:
            raise ValueError("budget_metric='latency' needs a latency table: pass latency_table=, measured for "
                             "the space with table.ensure_keys(space_latency_keys(space))")
        self.net, self.metric = net, metric
        self.latency = SpaceLatency(net.space, table) if table is not None else None

    def penalised(self, sample: object) -> torch.Tensor:
        if self.metric == "latency":
            return self.net.expected_latency(sample, self.latency)
        return self.net.expected_cost(sample)[0 if self.metric == "madds" else 1]

    def expected(self) -> dict[str, float | None]:
        """Expected costs at the noiseless sample (softmax of the logits)."""
        sample = self.net.mean_sample()
        madds, params = self.net.expected_cost(sample)
        latency = self.net.expected_latency(sample, self.latency) if self.latency is not None else None
        return {"expected_madds": madds.item(), "expected_params": params.item(),
                "expected_latency_ms": None if latency is None else latency.item()}


def search(space: SearchSpace, data: SearchData, settings: SearchSettings, *,
           checkpoint: Path | None = None,
           on_epoch: Callable[[dict], None] | None = None,
           latency_table: LatencyTable | None = None,
           warm_start: WarmStart | None = None,
           weights_out: Path | None = None) -> SearchResult:
    """Run the search; with ``checkpoint``, resume from it and save after every epoch.

    ``latency_table`` (holding every entry of :func:`spaces.supernet.space_latency_keys`)
    is needed for a latency budget; with it, the result also carries the expected
    latency and the table's prediction for the derived architecture. ``warm_start``
    starts the supernet from earlier searches (a checkpoint, when resuming, wins);
    ``weights_out`` receives the trained supernet's weight pool for later searches.
    """
    start = time.perf_counter()
    rank, _ = world()
    torch.manual_seed(settings.seed)
    net = SUPERNETS[settings.supernet](space)
    warm_started = 0
    if warm_start is not None:
        warm_started = net.load_cell_weights(warm_start.weights) if warm_start.weights else 0
        if warm_start.cell_logits is not None:
            net.set_cell_logits(warm_start.cell_logits)
    net.to(memory_format=torch.channels_last)  # 1.3-1.7x faster single-path steps on CPU (docs/search.md)
    pricing = _Pricing(net, settings.budget_metric, latency_table)
    weights, arch_params = net.weight_parameters(), net.arch_parameters()
    w_opt = torch.optim.SGD(weights, lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay, nesterov=True)
    a_opt = torch.optim.Adam(arch_params, lr=settings.arch_lr, betas=(0.5, 0.999), weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=settings.epochs)
    # Separate seeded streams so that resuming restores each exactly.
    gumbel, data_order, val_order = (torch.Generator().manual_seed(settings.seed + i) for i in (1, 2, 3))
    history: list[dict] = []
    first_epoch = 0
    baseline: float | None = None  # REINFORCE's moving average of the architecture steps' CE
    if checkpoint is not None and checkpoint.exists():
        state = _load_checkpoint(checkpoint, space, settings.supernet)
        net.load_state_dict(state["net"])
        w_opt.load_state_dict(state["w_opt"])
        a_opt.load_state_dict(state["a_opt"])
        schedule.load_state_dict(state["schedule"])
        gumbel.set_state(state["gumbel"])
        data_order.set_state(state["data_order"])
        val_order.set_state(state["val_order"])
        history, first_epoch = state["history"], state["epoch"]
        baseline = state.get("baseline")

    epoch_steps = steps_per_epoch(len(data.x_train), settings.batch_size)
    step = first_epoch * epoch_steps

    def tau() -> float:
        """Per-step exponential decay over the whole search."""
        return temperature(step / max(settings.epochs * epoch_steps - 1, 1), settings.tau_start,
                           settings.tau_end)

    def draw(gates: bool, uniform_resolution: bool = False) -> object:
        if settings.sampling == "single_path":
            return net.sample_path(tau(), gumbel, gates=gates, uniform_resolution=uniform_resolution)
        return net.sample(tau(), gumbel)

    for epoch in range(first_epoch, settings.epochs):
        net.train()
        val_batches = cycle(len(data.x_val), settings.batch_size, val_order)
        search_arch = epoch >= settings.warmup_epochs
        arch_losses: list[float] = []
        epoch_tau = tau()

        def arch_step() -> None:
            nonlocal baseline
            index = next(val_batches)
            a_opt.zero_grad(set_to_none=True)
            if settings.arch_gradient == "reinforce":
                sample = draw(gates=False)
                with torch.no_grad():
                    value = rank_mean(F.cross_entropy(net(data.x_val[index], sample), data.y_val[index]).item())
                baseline = moving_baseline(baseline, value)
                ce = score_function(value, net.log_probability(sample.choice), baseline)
            else:
                sample = draw(gates=True)
                ce = F.cross_entropy(net(data.x_val[index], sample), data.y_val[index])
                if settings.arch_gradient == "hybrid":  # the resolution, whose gate BN undoes, by REINFORCE
                    value = rank_mean(ce.item())
                    baseline = moving_baseline(baseline, value)
                    resolution = torch.log_softmax(net.resolution_logits, 0)[sample.choice.resolution]
                    ce = ce + score_term(value, resolution, baseline)
            # single path prices the distribution the path was drawn from; relaxed, the sample itself
            priced = net.mean_sample(grad=True) if settings.sampling == "single_path" else sample
            loss = cost_aware_loss(ce, pricing.penalised(priced), settings)
            loss.backward()
            average_gradients(arch_params)
            a_opt.step()
            arch_losses.append(loss.item())

        def weights_forward(xb: torch.Tensor) -> torch.Tensor:
            return net(xb, draw(gates=False, uniform_resolution=settings.weight_resolution == "uniform"))

        def after_weight_step() -> None:
            nonlocal step
            if search_arch:
                arch_step()
            step += 1

        epoch_start = time.perf_counter()
        train_loss = train_epoch(weights_forward, weights, w_opt, data.x_train, data.y_train, settings.batch_size,
                                 data_order, before_step=after_weight_step)
        train_seconds = time.perf_counter() - epoch_start  # the data-parallel part, for scaling benchmarks
        for p in arch_params:  # relaxed weight steps leave gradients on the logits; they must not leak
            p.grad = None
        average_buffers(net)
        schedule.step()
        record = {"epoch": epoch, "tau": epoch_tau, "train_loss": train_loss, "train_seconds": train_seconds,
                  "arch_loss": sum(arch_losses) / len(arch_losses) if arch_losses else None,
                  **pricing.expected(), "entropy": choice_entropy(net.probabilities())["mean"],
                  "derived": net.arch(net.derive()).encode()}
        history.append(record)
        if checkpoint is not None and rank == 0:
            state = {"format": CHECKPOINT_FORMAT, "space": space.to_dict(), "supernet": settings.supernet,
                     "epoch": epoch + 1, "net": net.state_dict(), "w_opt": w_opt.state_dict(),
                     "a_opt": a_opt.state_dict(), "schedule": schedule.state_dict(), "gumbel": gumbel.get_state(),
                     "data_order": data_order.get_state(), "val_order": val_order.get_state(), "history": history,
                     "baseline": baseline}
            write_atomically(checkpoint, lambda temp: torch.save(state, temp))
        if on_epoch is not None and rank == 0:
            on_epoch(record)

    net.eval()
    choice, candidates = derive_on_budget(
        net, settings.budget_metric, settings.target, data.x_train, data.y_train, data.x_val, data.y_val,
        samples=settings.derive_samples, ranked=settings.derive_ranked, window=settings.derive_window,
        table=latency_table, proxy=settings.derive_proxy, tuning=proxy_tuning(settings),
        keep_resolution=settings.derive_keep_resolution, seed=settings.seed + 5)
    effects = None
    if settings.evidence_samples:
        effects = cell_effects(net, settings.budget_metric, settings.target, data.x_train, data.x_val, data.y_val,
                               samples=settings.evidence_samples, table=latency_table, seed=settings.seed + 6)
    if weights_out is not None and rank == 0:
        pool = net.cell_weights()  # before the derived child's fine-tuning, which would not change it anyway
        write_atomically(weights_out, lambda temp: torch.save(pool, temp))
    arch = net.arch(choice)
    child = net.child(choice)
    val_accuracy = tuned_accuracy(child, arch.input_size, data.x_train, data.y_train, data.x_val, data.y_val,
                                  fine_tuning(settings, settings.finetune_epochs
                                              * steps_per_epoch(len(data.x_train), settings.batch_size)))
    probabilities = net.probabilities()
    return SearchResult(arch=arch, choice=choice, cost=arch_cost(arch), **pricing.expected(),
                        val_accuracy=val_accuracy,
                        predicted_latency_ms=latency_table.predict(arch) if latency_table is not None else None,
                        probabilities=probabilities, entropy=choice_entropy(probabilities), candidates=candidates,
                        cell_effects=effects, warm_started=warm_started, val_images=len(data.x_val), history=history,
                        wall_seconds=time.perf_counter() - start)


def fine_tuning(settings: SearchSettings, steps: int) -> FineTuning:
    """``steps`` of the derived child's fine-tuning recipe (a fifth of the search's weight lr)."""
    return FineTuning(steps, settings.lr * 0.2, settings.batch_size, settings.weight_decay, settings.seed + 4)


def proxy_tuning(settings: SearchSettings) -> FineTuning:
    """The training steps of the derivation's proxy: the fine-tuning recipe from inherited weights
    (``few_shot``), the search's own weight lr from a fresh initialisation (``scratch``)."""
    tuning = fine_tuning(settings, settings.derive_proxy_steps)
    return replace(tuning, lr=settings.lr) if settings.derive_proxy == "scratch" else tuning
