"""FBNetV2 / DMaskingNAS masks: one feature map at the largest shape serves every choice.

Channels: candidate widths ``c_1 < ... < c_k`` are masks over the first ``c_i``
channels of one max-width map; the map is multiplied by ``sum_i g_i mask_i``.

Resolution: the input is resized to each candidate resolution and zero-padded
back into the largest grid (top-left); every later feature map is masked to the
region the smaller input would occupy after the same strides, and global pooling
averages over that region. With one-hot weights the masked supernet computes
exactly what the child network computes at that resolution.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from spaces.cost import out_size

__all__ = ["channel_mask", "resize_input", "SpatialMasks"]


def channel_mask(widths: Sequence[int], weights: torch.Tensor, max_width: int) -> torch.Tensor:
    """``sum_i weights[i] * [channel < widths[i]]`` as a (max_width,) tensor."""
    index = torch.arange(max_width)
    masks = (index[None, :] < torch.tensor(list(widths))[:, None]).to(weights.dtype)
    return weights @ masks


def resize_input(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images at another square resolution; the child at resolution ``size`` is fed exactly this."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class SpatialMasks:
    """Resolution choice for one forward pass: input mixing, per-layer region masks, region pooling."""

    def __init__(self, resolutions: Sequence[int], weights: torch.Tensor) -> None:
        self.resolutions = list(resolutions)
        self.weights = weights
        self.max = max(self.resolutions)
        self.single = len(self.resolutions) == 1

    def mix_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.single:
            return resize_input(x, self.max)
        mixed = 0
        for g, r in zip(self.weights, self.resolutions):
            small = resize_input(x, r)
            mixed = mixed + g * F.pad(small, (0, self.max - r, 0, self.max - r))
        return mixed

    def _regions(self, size: int) -> list[int]:
        """Region side of each resolution on a map of side ``size`` (on the max grid)."""
        max_side, sides = self.max, list(self.resolutions)
        while max_side > size:
            max_side, sides = out_size(max_side, 2), [out_size(s, 2) for s in sides]
        return sides

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """Zero (softly) what lies outside the chosen resolution's region."""
        if self.single:
            return x
        size = x.shape[-1]
        index = torch.arange(size)
        total = 0
        for g, side in zip(self.weights, self._regions(size)):
            inside = (index < side).to(x.dtype)
            total = total + g * inside[:, None] * inside[None, :]
        return x * total

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Global average over the chosen region, as (N, C, 1, 1)."""
        if self.single:
            return x.mean((2, 3), keepdim=True)
        pooled = 0
        for g, side in zip(self.weights, self._regions(x.shape[-1])):
            pooled = pooled + g * x[:, :, :side, :side].mean((2, 3), keepdim=True)
        return pooled

    def side(self, size_at_max: int) -> torch.Tensor:
        """Root of the expected squared side: conv MAdds scale with side**2, exact when one-hot."""
        sides = torch.tensor(self._regions(size_at_max), dtype=self.weights.dtype)
        return torch.sqrt((self.weights * sides ** 2).sum())
