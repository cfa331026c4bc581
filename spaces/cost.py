"""Exact multiply-adds and parameter counts of an ``Arch``, computed analytically.

Convention (that of MobileNet, MnasNet and FBNet, whose "FLOPs" mean the same):

* MAdds: ``Cout*Hout*Wout*Cin/groups*k*k`` per Conv2d and ``in*out`` per Linear;
  squeeze-excite 1x1 convs and the classifier count; BN, activations, pooling,
  the SE rescale multiply, residual adds and bias adds do not.
* Params: every trainable parameter, BN weight and bias and conv/linear biases
  included (running statistics are buffers, not parameters).
* Spatial: 'same' padding ``k//2``; stride 2 halves H and W, rounding up.

:func:`count_module` measures the same quantities on a built module with
forward hooks; tests hold the two equal on random architectures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from spaces.arch import Arch
from spaces.encoding import encode_op
from spaces.ops import ConvOp, Op, SkipOp

__all__ = ["Cost", "LayerCost", "arch_cost", "layer_costs", "op_cost", "conv_cost", "mbconv_cost", "out_size",
           "count_module"]


@dataclass(frozen=True)
class Cost:
    """Multiply-adds and parameters; adds like a number."""

    madds: int = 0
    params: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.madds + other.madds, self.params + other.params)

    def to_dict(self) -> dict[str, int]:
        return {"madds": self.madds, "params": self.params}


@dataclass(frozen=True)
class LayerCost:
    """One row of a per-layer cost table."""

    where: str
    op: str
    input_size: int
    cost: Cost


def conv_cost(cin: Any, cout: Any, k: int, hw_out: Any, groups: Any = 1, bias: bool = False,
              bn: bool = False) -> tuple[Any, Any]:
    """(MAdds, params) of one conv; channels may be fractional *expected* widths (supernets).

    Depthwise convs pass ``groups=cin``.
    """
    weights = cout * cin / groups * k * k
    return weights * hw_out * hw_out, weights + (cout if bias else 0) + (2 * cout if bn else 0)


def out_size(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded conv of ``stride`` (rounds up)."""
    return -(-size // stride)


def mbconv_cost(cin: Any, mid: Any, cout: Any, k: int, hw_in: Any, hw_out: Any, *, has_pw: bool = True,
                se_reduced: Any = None, bias: bool = False, pw_groups: int = 1, pwl_groups: int = 1) -> tuple[Any, Any]:
    """(MAdds, params) of an MBConv; numbers or tensors, so supernets reuse it for expected costs."""
    parts = [conv_cost(mid, mid, k, hw_out, mid, bias, bn=True),
             conv_cost(mid, cout, 1, hw_out, pwl_groups, bias, bn=True)]
    if has_pw:
        parts.append(conv_cost(cin, mid, 1, hw_in, pw_groups, bias, bn=True))
    if se_reduced is not None:
        parts += [conv_cost(mid, se_reduced, 1, 1, bias=True), conv_cost(se_reduced, mid, 1, 1, bias=True)]
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def op_cost(op: Op, input_size: int) -> Cost:
    """Exact cost of one op on a square input of ``input_size`` (1 for pooled head convs)."""
    if isinstance(op, SkipOp):
        return Cost()
    out = out_size(input_size, op.stride)
    if isinstance(op, ConvOp):
        return _as_cost(conv_cost(op.cin, op.cout, op.k, out, op.groups, op.bias, op.bn))
    return _as_cost(mbconv_cost(op.cin, op.mid, op.cout, op.k, input_size, out, has_pw=op.has_pw,
                                se_reduced=op.se.reduced if op.se else None, bias=op.bias,
                                pw_groups=op.pw_groups, pwl_groups=op.pwl_groups))


def _as_cost(pair: tuple[float, float]) -> Cost:
    return Cost(int(round(pair[0])), int(round(pair[1])))


def layer_costs(arch: Arch) -> list[LayerCost]:
    """Per-layer costs in forward order, classifier last."""
    rows: list[LayerCost] = []
    size = arch.input_size
    for where, op in arch.layers():
        op_input = 1 if isinstance(op, ConvOp) and op.after_pool else size
        rows.append(LayerCost(where, encode_op(op), op_input, op_cost(op, op_input)))
        size = out_size(size, op.stride)
    features, classes = arch.feature_channels, arch.num_classes
    rows.append(LayerCost("classifier", f"fc_{features}x{classes}", 1,
                          Cost(features * classes, features * classes + classes)))
    return rows


def arch_cost(arch: Arch) -> Cost:
    """Exact MAdds and params of the child network of ``arch``."""
    total = Cost()
    for row in layer_costs(arch):
        total = total + row.cost
    return total


def count_module(module: nn.Module, input_shape: tuple[int, ...]) -> Cost:
    """Measure MAdds (forward hooks on Conv2d/Linear) and trainable params of a built module.

    An independent check of the analytic model: it knows nothing about ops.
    """
    madds = 0

    def on_conv(layer: nn.Conv2d, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal madds
        kh, kw = layer.kernel_size
        madds += output.shape[1] * output.shape[2] * output.shape[3] * layer.in_channels // layer.groups * kh * kw

    def on_linear(layer: nn.Linear, _inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        nonlocal madds
        madds += layer.in_features * layer.out_features

    handles = []
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            handles.append(layer.register_forward_hook(on_conv))
        elif isinstance(layer, nn.Linear):
            handles.append(layer.register_forward_hook(on_linear))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return Cost(madds, params)
