"""Random-shift augmentation in plain torch (no torchvision in this stack).

Each image is translated by its own random offset of at most ``strength * size``
pixels per axis; what shifts in from outside is zero, which after the data
layer's normalisation is the training mean. The offsets come from an explicit
generator, so a seed fixes them: final training derives one generator per
epoch and rank, which keeps resumed runs bit-identical.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["max_shift", "random_shift", "shift"]


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
