"""Pieces both supernets share: the searchable layer (a DNAS mixed op) and the fixed stem/head.

A :class:`SearchLayer` holds one module per candidate cell, built by the child
builder at the layer's largest widths. Each cell masks its expanded (mid) and
SE channels to what they are at the sampled input width, so with one-hot
weights the layer computes exactly the child's op with leading-slice weights.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from spaces.cost import conv_cost, mbconv_cost, out_size
from spaces.modules import MBConv, build_op
from spaces.ops import ConvOp, MBConvOp
from spaces.space import SKIP, cell_op
from spaces.supernet.masking import SpatialMasks, channel_mask
from spaces.supernet.slicing import sliced_mbconv

__all__ = ["SearchLayer", "FixedConvs", "copy_leading", "copy_overlap", "expectation"]


def expectation(weights: torch.Tensor, values: list[float]) -> torch.Tensor:
    """``sum_i weights[i] * values[i]``: an expected width under a relaxed choice."""
    return (weights * torch.tensor(values, dtype=weights.dtype)).sum()


class SearchLayer(nn.Module):
    """A mixed op over cells, given its candidate input widths and its (max) output width."""

    def __init__(self, cells: tuple[str, ...], in_widths: tuple[int, ...], out_width: int, stride: int,
                 first: bool) -> None:
        super().__init__()
        self.cells = cells
        self.in_widths = in_widths
        self.stride = stride
        self.ops = nn.ModuleList(
            nn.Identity() if cell == SKIP else build_op(cell_op(cell, in_widths[-1], out_width, stride, first))
            for cell in cells)
        # Per cell, its spec at every candidate input width (the output width changes neither mid nor SE).
        self.specs: list[list[MBConvOp] | None] = [
            None if cell == SKIP else [cell_op(cell, w, out_width, stride, first) for w in in_widths]
            for cell in cells]

    def forward(self, x: torch.Tensor, op_weights: torch.Tensor, in_weights: torch.Tensor,
                out_mask: torch.Tensor, spatial: SpatialMasks) -> torch.Tensor:
        total = 0
        for k, (module, specs) in enumerate(zip(self.ops, self.specs)):
            # skip: the input is already masked to this layer's width
            out = x if specs is None else _cell_forward(module, specs, x, in_weights, out_mask, spatial)
            total = total + op_weights[k] * out
        return total

    def run(self, cell: int, x: torch.Tensor, out_width: int) -> torch.Tensor:
        """Only cell ``cell`` on ``x`` (one of the candidate input widths), sliced to ``out_width``."""
        specs = self.specs[cell]
        if specs is None:
            return x
        return sliced_mbconv(self.ops[cell], specs[self.in_widths.index(x.shape[1])], out_width, x)

    def expected_cost(self, op_weights: torch.Tensor, in_weights: torch.Tensor, out_width: torch.Tensor,
                      hw_in: torch.Tensor, hw_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected (MAdds, params): per cell, the MBConv cost at expected widths, weighted by op weights."""
        madds = params = torch.zeros(())
        for weight, specs in zip(op_weights, self.specs):
            if specs is None:
                continue
            m, p = mbconv_cost(expectation(in_weights, [s.cin for s in specs]),
                               expectation(in_weights, [s.mid for s in specs]), out_width, specs[0].k, hw_in, hw_out,
                               has_pw=specs[0].has_pw, bias=specs[0].bias,
                               se_reduced=expectation(in_weights, [s.se.reduced for s in specs]) if specs[0].se
                               else None)
            madds, params = madds + weight * m, params + weight * p
        return madds, params


def _cell_forward(block: MBConv, specs: list[MBConvOp], x: torch.Tensor, in_weights: torch.Tensor,
                  out_mask: torch.Tensor, spatial: SpatialMasks) -> torch.Tensor:
    mid_mask = channel_mask([s.mid for s in specs], in_weights, specs[-1].mid)[None, :, None, None]
    h = spatial.mask(block.pw(x)) * mid_mask if specs[0].has_pw else x
    h = spatial.mask(block.dw(h)) * mid_mask
    if specs[0].se is not None:
        se = block.se
        reduced_mask = channel_mask([s.se.reduced for s in specs], in_weights, specs[-1].se.reduced)
        squeezed = se.act(se.reduce(spatial.pool(h))) * reduced_mask[None, :, None, None]
        h = h * se.gate(se.expand(squeezed))
    out = spatial.mask(block.pwl(h)) * out_mask[None, :, None, None]
    return out + x if block.residual else out


class FixedConvs(nn.Module):
    """Stem or head convs (not searched); head convs marked ``after_pool`` run on the pooled vector."""

    def __init__(self, ops: tuple[ConvOp, ...]) -> None:
        super().__init__()
        self.specs = ops
        self.convs = nn.ModuleList(build_op(op) for op in ops)

    def forward(self, x: torch.Tensor, spatial: SpatialMasks, pool: bool = False) -> torch.Tensor:
        pooled = False
        for op, module in zip(self.specs, self.convs):
            if op.after_pool and not pooled:
                x, pooled = spatial.pool(x), True
            x = module(x) if pooled else spatial.mask(module(x))
        return spatial.pool(x) if pool and not pooled else x

    def expected_cost(self, in_channels: torch.Tensor | int, size: int, spatial: SpatialMasks,
                      side: Callable[[int], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Expected (MAdds, params) given the expected input channels; also the output size on the max grid."""
        madds = params = torch.zeros(())
        channels: torch.Tensor | int = in_channels
        for op in self.specs:
            if not op.after_pool:
                size = out_size(size, op.stride)
            m, p = conv_cost(channels, op.cout, op.k, 1 if op.after_pool else side(size), op.groups, op.bias, op.bn)
            madds, params, channels = madds + m, params + p, op.cout
        return madds, params, size

    def copy_into(self, pre_pool: nn.Module, post_pool: nn.Module | None = None) -> None:
        """Inherit weights into a child's convs (leading slices where input channels shrink)."""
        copy_leading(nn.Sequential(*(m for op, m in zip(self.specs, self.convs) if not op.after_pool)), pre_pool)
        if post_pool is not None:
            copy_leading(nn.Sequential(*(m for op, m in zip(self.specs, self.convs) if op.after_pool)), post_pool)


def copy_leading(source: nn.Module, target: nn.Module) -> None:
    """Copy each tensor's leading slice: masks select the first channels, so this is the child."""
    copy_overlap(source.state_dict(), target)


def copy_overlap(source_state: dict[str, torch.Tensor], target: nn.Module) -> None:
    """Copy into every tensor of ``target`` the region it shares with the same-named source tensor.

    Channels align at the front: a narrower target takes the source's leading slice (a
    child inherits its supernet's weights), a wider one keeps its own values beyond the
    source's extent (a supernet warm-started from a narrower one). Convolution kernels
    (the last two dims of a 4-d weight) align at their centres, as once-for-all shares a
    large kernel's centre with a smaller one: a mutant whose kernel changed keeps its
    parent's taps where they overlap. Tensors the source lacks are left as they are.
    """
    with torch.no_grad():
        for name, tensor in target.state_dict().items():
            src = source_state.get(name)
            if src is None or src.dim() != tensor.dim():
                continue
            if tensor.dim() == 0:
                tensor.copy_(src)
                continue
            dst_region, src_region = [], []
            for d, (a, b) in enumerate(zip(tensor.shape, src.shape)):
                n = min(a, b)
                centred = tensor.dim() == 4 and d >= 2
                dst_start, src_start = ((a - n) // 2, (b - n) // 2) if centred else (0, 0)
                dst_region.append(slice(dst_start, dst_start + n))
                src_region.append(slice(src_start, src_start + n))
            tensor[tuple(dst_region)].copy_(src[tuple(src_region)])
