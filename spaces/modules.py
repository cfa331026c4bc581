"""Plain torch modules for the op vocabulary, and the child-network builder.

A child network contains no supernet code: it is exactly what gets retrained,
exported to TorchScript/ONNX and served.
"""

from __future__ import annotations

import torch
from torch import nn

from spaces.arch import Arch
from spaces.ops import ConvOp, MBConvOp, Op, SEOp, SkipOp

__all__ = ["ChildNet", "ConvBNAct", "MBConv", "SqueezeExcite", "activation", "build_op"]


def activation(name: str) -> nn.Module:
    """Module for an activation or SE gate name of :mod:`spaces.ops`."""
    return {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "hswish": nn.Hardswish,
        "swish": nn.SiLU,
        "none": nn.Identity,
        "sigmoid": nn.Sigmoid,
        "hsigmoid": nn.Hardsigmoid,
    }[name]()


class ConvBNAct(nn.Sequential):
    """Conv2d with 'same' padding, optional BN, activation."""

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1, act: str = "relu",
                 bn: bool = True, bias: bool = False) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=bias)]
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(activation(act))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel attention: global pool, 1x1 reduce, act, 1x1 expand, gate, rescale."""

    def __init__(self, channels: int, spec: SEOp) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, spec.reduced, 1, bias=True)
        self.act = activation(spec.act)
        self.expand = nn.Conv2d(spec.reduced, channels, 1, bias=True)
        self.gate = activation(spec.gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(scale))))


class MBConv(nn.Module):
    """Inverted residual block of :class:`spaces.ops.MBConvOp`."""

    def __init__(self, op: MBConvOp) -> None:
        super().__init__()
        self.pw = (ConvBNAct(op.cin, op.mid, 1, groups=op.pw_groups, act=op.act, bias=op.bias)
                   if op.has_pw else nn.Identity())
        self.dw = ConvBNAct(op.mid, op.mid, op.k, op.s, groups=op.mid, act=op.act, bias=op.bias)
        self.se = SqueezeExcite(op.mid, op.se) if op.se is not None else nn.Identity()
        self.pwl = ConvBNAct(op.mid, op.cout, 1, groups=op.pwl_groups, act="none", bias=op.bias)
        self.residual = op.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pwl(self.se(self.dw(self.pw(x))))
        return out + x if self.residual else out


def build_op(op: Op) -> nn.Module:
    """The module of one op spec."""
    if isinstance(op, SkipOp):
        return nn.Identity()
    if isinstance(op, ConvOp):
        return ConvBNAct(op.cin, op.cout, op.k, op.s, op.groups, op.act, op.bn, op.bias)
    return MBConv(op)


class ChildNet(nn.Module):
    """Stem -> blocks -> head convs -> global pool -> pooled head convs -> classifier."""

    def __init__(self, arch: Arch, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = nn.Sequential(*(build_op(op) for op in arch.stem))
        self.blocks = nn.Sequential(*(build_op(op) for op in arch.blocks))
        self.head = nn.Sequential(*(build_op(op) for op in arch.head if not op.after_pool))
        self.pooled_head = nn.Sequential(*(build_op(op) for op in arch.head if op.after_pool))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(arch.feature_channels, arch.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        x = self.pooled_head(x.mean((2, 3), keepdim=True))
        return self.classifier(self.dropout(torch.flatten(x, 1)))

