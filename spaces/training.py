"""Data-parallel training primitives shared by the search, the derivation and retraining.

The same code runs in one process or under ``torch.distributed`` (gloo on CPU,
as Ray Train runs it): every rank takes its slice of the same seeded global
batch, gradients are averaged in one all-reduce over a flat buffer (one
collective per step, not one per parameter tensor), and BN statistics are
averaged before a model is evaluated or saved.
"""

from __future__ import annotations

from itertools import islice
from typing import Callable, Iterable, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["CALIBRATION_IMAGES", "average_buffers", "average_gradients", "batches", "cycle", "evaluate",
           "recalibrate_bn", "steps_per_epoch", "train_epoch", "train_steps", "world"]


CALIBRATION_IMAGES = 512  # training images a child's BN statistics are re-estimated on


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def average_gradients(params: list[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over ranks in one flat all-reduce.

    Parameters without a gradient (ops a single-path step did not run) are left
    without one: every rank ran the same sampled path, so the set is the same on all
    ranks, and the optimiser then skips them as it does in one process.
    """
    _, size = world()
    if size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def rank_mean(value: float) -> float:
    """``value`` averaged over ranks (itself in one process)."""
    _, size = world()
    if size == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total)
    return total.item() / size


def average_buffers(module: nn.Module) -> None:
    """Average BN running statistics over ranks: each rank normalised with its own slice of the
    batch, so without this the ranks' children (and rank 0's checkpoint) would differ."""
    _, size = world()
    if size == 1:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer /= size


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """This rank's slice of each global batch of a seeded permutation (last partial batch dropped)."""
    rank, size = world()
    order = torch.randperm(n, generator=generator)
    batch_size = min(batch_size, n)
    for start in range(0, n - batch_size + 1, batch_size):
        yield order[start:start + batch_size][rank::size]


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Global batches in one epoch of :func:`batches` over ``n`` images (the last partial one is dropped)."""
    return max(n // min(batch_size, n), 1)


def cycle(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """:func:`batches` over and over (architecture steps draw val batches as they need them)."""
    while True:
        yield from batches(n, batch_size, generator)


def train_epoch(model: Callable[[torch.Tensor], torch.Tensor], params: list[nn.Parameter],
                optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                generator: torch.Generator, before_step: Callable[[], None] | None = None,
                label_smoothing: float = 0.0) -> float:
    """One data-parallel epoch of cross-entropy; returns the mean loss of this rank's batches."""
    return train_batches(model, params, optimizer, x, y, batches(len(x), batch_size, generator), before_step,
                         label_smoothing)


def train_steps(model: nn.Module, params: list[nn.Parameter], optimizer: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor, batch_size: int, generator: torch.Generator, steps: int) -> float:
    """``steps`` data-parallel steps over :func:`cycle`: the same batches as that many steps of epochs."""
    return train_batches(model, params, optimizer, x, y, islice(cycle(len(x), batch_size, generator), steps))


def train_batches(model: Callable[[torch.Tensor], torch.Tensor], params: list[nn.Parameter],
                  optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, indices: Iterable[torch.Tensor],
                  before_step: Callable[[], None] | None = None, label_smoothing: float = 0.0) -> float:
    """A step of cross-entropy per index batch; returns the mean loss of this rank's batches."""
    losses = []
    for index in indices:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[index]), y[index], label_smoothing=label_smoothing)
        loss.backward()
        average_gradients(params)
        optimizer.step()
        losses.append(loss.item())
        if before_step is not None:
            before_step()
    return sum(losses) / max(len(losses), 1)


@torch.inference_mode()  # no autograd bookkeeping at all, not just no graph
def evaluate(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 512) -> float:
    """Accuracy over all ranks' shards (each rank evaluates its slice, counts are summed)."""
    rank, size = world()
    correct = torch.zeros(2)
    for start in range(rank * batch_size, len(x), batch_size * size):
        logits = model(x[start:start + batch_size])
        correct += torch.tensor([(logits.argmax(1) == y[start:start + batch_size]).sum().item(), len(logits)])
    if size > 1:
        dist.all_reduce(correct)
    return (correct[0] / correct[1].clamp(min=1)).item()


def recalibrate_bn(child: nn.Module, images: torch.Tensor, batch_size: int = 128) -> None:
    """Re-estimate a child's BN statistics on ``images`` (its own resolution) with its current weights.

    Running statistics lag behind weights that moved fast (a short training), and a
    supernet's shared statistics belong to the mixture of children trained through
    them, so a model is evaluated only after this ("precise BN" of pycls; once-for-all
    does it per child). Data-parallel ranks average what they saw.
    """
    norms = [(m, m.momentum) for m in child.modules() if isinstance(m, nn.BatchNorm2d)]
    for module, _ in norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative average over the calibration batches
    child.train()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            child(images[start:start + batch_size])
    average_buffers(child)
    for module, momentum in norms:
        module.momentum = momentum
    child.eval()
