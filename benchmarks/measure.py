"""Measurement helpers the benchmarks share."""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["saved_bytes"]


def saved_bytes(step: Callable[[], torch.Tensor]) -> int:
    """Bytes autograd keeps for backward during ``step``'s forward, each storage counted once.

    That is what a training step holds at its peak on top of parameters, gradients and
    optimiser state; exact and deterministic on any device.
    """
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step()
    loss.backward()
    return sum(storages.values())
