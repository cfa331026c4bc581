"""Run a max-width block at a smaller width by slicing its weights (single-path steps).

A single-path step computes one sampled child only. Its convolutions use the
leading ``[:cout, :cin]`` slice of the supernet's max-width weights and its
batch norms the leading slice of their affine parameters and running
statistics (updated in place through the slice), as slimmable and once-for-all
supernets do. The slices are exactly what :meth:`Supernet.child` copies into a
child, so a sliced forward *is* that child's forward, at a child's cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spaces.modules import MBConv, SqueezeExcite
from spaces.ops import MBConvOp

__all__ = ["sliced_conv_bn_act", "sliced_mbconv"]


def _sliced_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """What ``nn.BatchNorm2d.forward`` does, on the leading channels (momentum ``None``: cumulative)."""
    c = x.shape[1]
    momentum = bn.momentum or 0.0
    if bn.training:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c], bn.training,
                        momentum, bn.eps)


def sliced_conv_bn_act(layer: nn.Sequential, x: torch.Tensor, cout: int, depthwise: bool = False) -> torch.Tensor:
    """A :class:`spaces.modules.ConvBNAct` (conv, optional BN, activation) on ``x``'s channels, ``cout`` out."""
    conv, *rest = layer
    weight = conv.weight[:cout] if depthwise else conv.weight[:cout, :x.shape[1]]
    bias = conv.bias[:cout] if conv.bias is not None else None
    y = F.conv2d(x, weight, bias, conv.stride, conv.padding, groups=cout if depthwise else 1)
    for module in rest:
        y = _sliced_batch_norm(module, y) if isinstance(module, nn.BatchNorm2d) else module(y)
    return y


def _sliced_se(se: SqueezeExcite, x: torch.Tensor, reduced: int) -> torch.Tensor:
    c = x.shape[1]
    squeezed = se.act(F.conv2d(x.mean((2, 3), keepdim=True), se.reduce.weight[:reduced, :c], se.reduce.bias[:reduced]))
    return x * se.gate(F.conv2d(squeezed, se.expand.weight[:c, :reduced], se.expand.bias[:c]))


def sliced_mbconv(block: MBConv, spec: MBConvOp, cout: int, x: torch.Tensor) -> torch.Tensor:
    """``block`` run at input ``x`` with ``spec``'s mid and SE widths and ``cout`` outputs.

    The residual is the block's own: only layers after a stage's first have one, and
    their input already has the stage's width. Cells never set groups (the space
    forbids it), so pointwise convs are dense.
    """
    h = sliced_conv_bn_act(block.pw, x, spec.mid) if spec.has_pw else x
    h = sliced_conv_bn_act(block.dw, h, spec.mid, depthwise=True)
    if spec.se is not None:
        h = _sliced_se(block.se, h, spec.se.reduced)
    out = sliced_conv_bn_act(block.pwl, h, cout)
    return out + x if block.residual else out
