"""Gumbel-softmax sampling of architecture weights and its temperature schedule."""

from __future__ import annotations

import math

import torch

__all__ = ["gumbel_softmax", "hard_gumbel", "temperature"]


def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Relaxed one-hot sample of ``softmax(logits)``; a seeded generator keeps ranks in sync."""
    uniform = torch.rand(logits.shape, generator=generator, dtype=logits.dtype).clamp_(1e-10, 1 - 1e-10)
    return torch.softmax((logits - torch.log(-torch.log(uniform))) / tau, dim=-1)


def hard_gumbel(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None,
                gate: bool = True) -> tuple[int, torch.Tensor | None]:
    """One discrete choice drawn from ``softmax(logits)`` (Gumbel-max) and its straight-through gate.

    The gate is GDAS's hard Gumbel-softmax weight of the chosen index: exactly the
    hard one-hot in value (1), the relaxed sample's gradient (temperature ``tau``) in
    backward, so multiplying the chosen op's output by it trains every logit of the
    group while only that op runs. ``gate=False`` (weight steps) draws the same
    choice from the same noise and returns no gate.
    """
    uniform = torch.rand(logits.shape, generator=generator, dtype=logits.dtype).clamp_(1e-10, 1 - 1e-10)
    noisy = logits - torch.log(-torch.log(uniform))
    index = int(noisy.detach().argmax())
    if not gate:
        return index, None
    soft = torch.softmax(noisy / tau, dim=-1)[index]
    return index, soft - soft.detach() + 1.0


def temperature(progress: float, start: float, end: float) -> float:
    """Exponential decay from ``start`` to ``end`` as ``progress`` goes 0 -> 1 (FBNet's schedule)."""
    progress = min(max(progress, 0.0), 1.0)
    return start * math.exp(progress * math.log(end / start))
