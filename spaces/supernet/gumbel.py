"""Gumbel-softmax sampling of architecture weights and its temperature schedule."""

from __future__ import annotations

import math

import torch

__all__ = ["gumbel_softmax", "temperature"]


def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Relaxed one-hot sample of ``softmax(logits)``; a seeded generator keeps ranks in sync."""
    uniform = torch.rand(logits.shape, generator=generator, dtype=logits.dtype).clamp_(1e-10, 1 - 1e-10)
    return torch.softmax((logits - torch.log(-torch.log(uniform))) / tau, dim=-1)


def temperature(progress: float, start: float, end: float) -> float:
    """Exponential decay from ``start`` to ``end`` as ``progress`` goes 0 -> 1 (FBNet's schedule)."""
    progress = min(max(progress, 0.0), 1.0)
    return start * math.exp(progress * math.log(end / start))
