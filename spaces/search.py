"""The bilevel supernet search loop: weights on train, architecture on val.

After ``warmup_epochs`` of weights only, every step updates the network weights
on a train batch (cross-entropy) and then the architecture logits on a val batch
with a cost-aware loss: FBNet's ``CE * (log cost / log target) ** beta`` or the
hinge ``CE + lambda * relu(cost / target - 1)``, where the cost is the expected
MAdds, params or latency (ms, from a lookup table; it enters FBNet's log form
in microseconds, so that the log stays positive for sub-millisecond networks,
as the paper's milliseconds do for its phone models). The Gumbel temperature decays
exponentially over the search. The derived child inherits the supernet's
weights, is fine-tuned briefly and then validated; its accuracy is what the
search reports.

The same code runs in one process or data-parallel under ``torch.distributed``
(gloo on CPU, as Ray Train runs it): every rank takes its slice of the same
global batch, gradients are averaged with all-reduce, the Gumbel noise comes
from a generator seeded identically on every rank, so architecture logits stay
in sync. Only rank 0 writes checkpoints.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from spaces.arch import Arch
from spaces.cost import Cost, arch_cost
from spaces.latency import LatencyTable
from spaces.space import SearchSpace
from spaces.supernet import (ArchChoice, DenseNASSupernet, DMaskingSupernet, SpaceLatency, Supernet, resize_input,
                             temperature)

__all__ = ["CheckpointError", "SearchData", "SearchSettings", "SearchResult", "average_buffers", "cost_aware_loss",
           "evaluate", "save_atomically", "search", "train_epoch"]

CHECKPOINT_FORMAT = "autospace-search-checkpoint/1"


class CheckpointError(ValueError):
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
    cost_loss: Literal["fbnet", "hinge"] = "fbnet"
    cost_beta: float = 0.6
    cost_lambda: float = 1.0
    tau_start: float = 5.0
    tau_end: float = 0.5
    finetune_epochs: int = 1
    seed: int = 0
    supernet: Literal["dmasking", "densenas"] = "dmasking"
    budget_metric: Literal["madds", "params", "latency"] = "madds"
    target: float = 5e6

    def __post_init__(self) -> None:
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


@dataclass
class SearchResult:
    """What a search returns: the derived architecture, its costs and accuracy, and the evidence."""

    arch: Arch
    choice: ArchChoice
    cost: Cost
    expected_madds: float
    expected_params: float
    val_accuracy: float
    probabilities: dict
    expected_latency_ms: float | None = None
    predicted_latency_ms: float | None = None
    history: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"arch": self.arch.encode(), "choice": asdict(self.choice), **self.cost.to_dict(),
                "expected_madds": self.expected_madds, "expected_params": self.expected_params,
                "val_accuracy": self.val_accuracy, "expected_latency_ms": self.expected_latency_ms,
                "predicted_latency_ms": self.predicted_latency_ms, "probabilities": self.probabilities,
                "history": self.history, "wall_seconds": self.wall_seconds}


def cost_aware_loss(ce: torch.Tensor, cost: torch.Tensor, settings: SearchSettings) -> torch.Tensor:
    """The search's architecture loss; both forms penalise expected cost above the target."""
    if settings.cost_loss == "fbnet":
        unit = _log_unit(settings.budget_metric)
        return ce * (torch.log(cost * unit) / math.log(settings.target * unit)) ** settings.cost_beta
    return ce + settings.cost_lambda * F.relu(cost / settings.target - 1)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _average_gradients(params: list[nn.Parameter]) -> None:
    rank, world = _world()
    if world == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= world


def average_buffers(module: nn.Module) -> None:
    """Average BN running statistics over ranks: each rank normalised with its own slice of the
    batch, so without this the ranks' children (and rank 0's checkpoint) would differ."""
    rank, world = _world()
    if world == 1:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer /= world


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """This rank's slice of each global batch of a seeded permutation (last partial batch dropped)."""
    rank, world = _world()
    order = torch.randperm(n, generator=generator)
    batch_size = min(batch_size, n)
    for start in range(0, n - batch_size + 1, batch_size):
        yield order[start:start + batch_size][rank::world]


def train_epoch(model: Callable[[torch.Tensor], torch.Tensor], params: list[nn.Parameter],
                optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                generator: torch.Generator, before_step: Callable[[], None] | None = None,
                label_smoothing: float = 0.0) -> float:
    """One data-parallel epoch of cross-entropy; returns the mean loss of this rank's batches."""
    losses = []
    for index in _batches(len(x), batch_size, generator):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[index]), y[index], label_smoothing=label_smoothing)
        loss.backward()
        _average_gradients(params)
        optimizer.step()
        losses.append(loss.item())
        if before_step is not None:
            before_step()
    return sum(losses) / max(len(losses), 1)


@torch.no_grad()
def evaluate(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 512) -> float:
    """Accuracy over all ranks' shards (each rank evaluates its slice, counts are summed)."""
    rank, world = _world()
    correct = torch.zeros(2)
    for start in range(rank * batch_size, len(x), batch_size * world):
        logits = model(x[start:start + batch_size])
        correct += torch.tensor([(logits.argmax(1) == y[start:start + batch_size]).sum().item(), len(logits)])
    if world > 1:
        dist.all_reduce(correct)
    return (correct[0] / correct[1].clamp(min=1)).item()


def save_atomically(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, space: SearchSpace, supernet: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or foreign file: say which and what to do
        raise CheckpointError(f"search checkpoint {path} cannot be read ({err}); delete it to start the search over") \
            from None
    if state.get("format") != CHECKPOINT_FORMAT or state.get("space") != space.to_dict() \
            or state.get("supernet") != supernet:
        raise CheckpointError(f"search checkpoint {path} belongs to another format, search space or supernet; "
                         "delete it or point the search at a fresh directory")
    return state


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
           latency_table: LatencyTable | None = None) -> SearchResult:
    """Run the search; with ``checkpoint``, resume from it and save after every epoch.

    ``latency_table`` (holding every entry of :func:`spaces.supernet.space_latency_keys`)
    is needed for a latency budget; with it, the result also carries the expected
    latency and the table's prediction for the derived architecture.
    """
    start = time.perf_counter()
    rank, _ = _world()
    torch.manual_seed(settings.seed)
    net = SUPERNETS[settings.supernet](space)
    pricing = _Pricing(net, settings.budget_metric, latency_table)
    weights, arch_params = net.weight_parameters(), net.arch_parameters()
    w_opt = torch.optim.SGD(weights, lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay, nesterov=True)
    a_opt = torch.optim.Adam(arch_params, lr=settings.arch_lr, betas=(0.5, 0.999), weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=settings.epochs)
    # Separate seeded streams so that resuming restores each exactly.
    gumbel, data_order, val_order = (torch.Generator().manual_seed(settings.seed + i) for i in (1, 2, 3))
    history: list[dict] = []
    first_epoch = 0
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

    for epoch in range(first_epoch, settings.epochs):
        tau = temperature(epoch / max(settings.epochs - 1, 1), settings.tau_start, settings.tau_end)
        net.train()
        val_batches = _cycle(len(data.x_val), settings.batch_size, val_order)
        search_arch = epoch >= settings.warmup_epochs
        arch_losses: list[float] = []

        def arch_step() -> None:
            index = next(val_batches)
            a_opt.zero_grad(set_to_none=True)
            sample = net.sample(tau, gumbel)
            ce = F.cross_entropy(net(data.x_val[index], sample), data.y_val[index])
            loss = cost_aware_loss(ce, pricing.penalised(sample), settings)
            loss.backward()
            _average_gradients(arch_params)
            a_opt.step()
            arch_losses.append(loss.item())

        def weights_forward(xb: torch.Tensor) -> torch.Tensor:
            return net(xb, net.sample(tau, gumbel))

        train_loss = train_epoch(weights_forward, weights, w_opt, data.x_train, data.y_train, settings.batch_size,
                                 data_order, before_step=arch_step if search_arch else None)
        for p in arch_params:  # weight steps leave gradients on the logits; they must not leak
            p.grad = None
        average_buffers(net)
        schedule.step()
        record = {"epoch": epoch, "tau": tau, "train_loss": train_loss,
                  "arch_loss": sum(arch_losses) / len(arch_losses) if arch_losses else None,
                  **pricing.expected(), "derived": net.arch(net.derive()).encode()}
        history.append(record)
        if checkpoint is not None and rank == 0:
            save_atomically({"format": CHECKPOINT_FORMAT, "space": space.to_dict(), "supernet": settings.supernet,
                              "epoch": epoch + 1,
                              "net": net.state_dict(), "w_opt": w_opt.state_dict(), "a_opt": a_opt.state_dict(),
                              "schedule": schedule.state_dict(), "gumbel": gumbel.get_state(),
                              "data_order": data_order.get_state(), "val_order": val_order.get_state(),
                              "history": history}, checkpoint)
        if on_epoch is not None and rank == 0:
            on_epoch(record)

    choice = net.derive()
    arch = net.arch(choice)
    child = net.child(choice)
    val_accuracy = finetune_and_validate(child, arch, data, settings)
    return SearchResult(arch=arch, choice=choice, cost=arch_cost(arch), **pricing.expected(),
                        val_accuracy=val_accuracy,
                        predicted_latency_ms=latency_table.predict(arch) if latency_table is not None else None,
                        probabilities=net.probabilities(), history=history,
                        wall_seconds=time.perf_counter() - start)


def finetune_and_validate(child: nn.Module, arch: Arch, data: SearchData, settings: SearchSettings) -> float:
    """Fine-tune the inherited child briefly (recalibrating BN), then its validation accuracy."""
    x_train, x_val = resize_input(data.x_train, arch.input_size), resize_input(data.x_val, arch.input_size)
    params = list(child.parameters())
    optimizer = torch.optim.SGD(params, lr=settings.lr * 0.2, momentum=0.9, weight_decay=settings.weight_decay)
    order = torch.Generator().manual_seed(settings.seed + 4)
    child.train()
    for _ in range(settings.finetune_epochs):
        train_epoch(child, params, optimizer, x_train, data.y_train, settings.batch_size, order)
    average_buffers(child)
    child.eval()
    return evaluate(child, x_val, data.y_val)


def _cycle(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    while True:
        yield from _batches(n, batch_size, generator)
