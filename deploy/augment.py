"""Training augmentations in plain torch (no torchvision in this stack), one batch op each.

- random shift (a random crop of a zero-padded image): each image is translated by
  its own offset of at most ``strength * size`` pixels per axis;
- horizontal flip with probability ``p`` per image;
- random erasing (Zhong et al. 2020): with probability ``p`` a rectangle of 2-25 %
  of the image, aspect ratio 0.3-3.3, is set to zero.

What shifts in or is erased is zero, which after the data layer's normalisation is
the training mean. Every draw comes from an explicit generator, so a seed fixes
them: final training derives one generator per epoch and rank, which keeps resumed
runs bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Augmentation", "max_shift", "random_erasing", "random_flip", "random_shift", "shift"]

ERASED_AREA = (0.02, 0.25)  # share of the image one erased rectangle covers (the paper's range for CIFAR)
ERASED_LOG_ASPECT = 1.2  # |log aspect ratio| <= 1.2: ratios 0.3 to 3.3, as in the paper


@dataclass(frozen=True)
class Augmentation:
    """The augmentations a training applies to each batch, in this order: shift, flip, erase."""

    shift: float = 0.0
    flip: float = 0.0
    erasing: float = 0.0

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_erasing(random_flip(random_shift(x, self.shift, generator), self.flip, generator),
                              self.erasing, generator)


def max_shift(strength: float, size: int) -> int:
    """The largest offset in pixels: ``strength * size`` rounded down, so the bound always holds."""
    if strength < 0:
        raise ValueError(f"augmentation strength must be >= 0, got {strength}")
    return int(strength * size)


def shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Move image ``i`` of NCHW ``x`` down by ``dy[i]`` and right by ``dx[i]`` pixels (negative: up/left), zero fill.

    One gather from a zero-padded copy, so a whole batch costs one indexing op.
    """
    n, _, height, width = x.shape
    pad = int(max(dy.abs().max(), dx.abs().max())) if n else 0
    if pad == 0:
        return x
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = torch.arange(height)[None, :] + pad - dy[:, None]  # (N, H): source row of each output row
    cols = torch.arange(width)[None, :] + pad - dx[:, None]
    batch = torch.arange(n)[:, None, None]
    # advanced indexing puts the indexed dims first: (N, H, W, C) -> NCHW
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_shift(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Shift every image of NCHW ``x`` by independent uniform offsets in ``[-m, m]``, ``m = max_shift``.

    With ``m = 0`` the batch is returned unchanged and the generator is not used.
    """
    m = max(max_shift(strength, x.shape[-2]), max_shift(strength, x.shape[-1]))
    if m == 0:
        return x
    offsets = torch.randint(-m, m + 1, (2, len(x)), generator=generator)
    return shift(x, offsets[0], offsets[1])


def _probability(p: float, name: str) -> None:
    if not 0 <= p <= 1:
        raise ValueError(f"{name} probability must be in [0, 1], got {p}")


def random_flip(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image of NCHW ``x`` left-right with probability ``p``; ``p = 0`` leaves the generator unused."""
    _probability(p, "flip")
    if p == 0:
        return x
    flipped = torch.rand(len(x), generator=generator) < p
    return torch.where(flipped[:, None, None, None], x.flip(-1), x)


def random_erasing(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Zero one random rectangle in each image of NCHW ``x`` with probability ``p`` (all channels).

    Area and aspect ratio are drawn per image (a side longer than the image is cut to it),
    then a position where the rectangle fits. ``p = 0`` leaves the generator unused.
    """
    _probability(p, "erasing")
    if p == 0:
        return x
    n, _, height, width = x.shape
    draws = torch.rand(4, n, generator=generator)
    erased = torch.rand(n, generator=generator) < p
    area = (ERASED_AREA[0] + draws[0] * (ERASED_AREA[1] - ERASED_AREA[0])) * height * width
    aspect = torch.exp((draws[1] * 2 - 1) * ERASED_LOG_ASPECT)
    h = (area * aspect).sqrt().round().clamp(1, height)
    w = (area / aspect).sqrt().round().clamp(1, width)
    top = (draws[2] * (height - h + 1)).floor()
    left = (draws[3] * (width - w + 1)).floor()
    rows = torch.arange(height)[None, :]
    cols = torch.arange(width)[None, :]
    inside = (((rows >= top[:, None]) & (rows < (top + h)[:, None]))[:, :, None]
              & ((cols >= left[:, None]) & (cols < (left + w)[:, None]))[:, None, :])
    return x.masked_fill((inside & erased[:, None, None])[:, None], 0.0)
