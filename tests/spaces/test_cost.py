"""Analytic MAdds/params against hand counts and against forward hooks on built modules."""

from __future__ import annotations

import math
import random

import pytest
from torch import nn

from spaces.arch import Arch
from spaces.cost import Cost, arch_cost, conv_cost, count_module, layer_costs, op_cost
from spaces.modules import ChildNet, build_op
from spaces.ops import ConvOp, MBConvOp, SEOp, SkipOp
from tests.spaces.random_archs import random_arch, random_op


def test_cost_adds_and_serialises():
    assert Cost(3, 4) + Cost(10, 20) == Cost(13, 24)
    assert Cost().to_dict() == {"madds": 0, "params": 0}


def test_conv_cost_formula():
    assert conv_cost(3, 8, 3, 8, bn=True) == (8 * 8 * 8 * 3 * 9, 216 + 16)
    assert conv_cost(16, 16, 5, 4, groups=16, bias=True) == (16 * 25 * 16, 16 * 25 + 16)
    # Fractional expected widths (supernets) stay fractional.
    assert conv_cost(2.5, 4, 3, 2) == pytest.approx((2.5 * 4 * 9 * 4, 2.5 * 4 * 9))


HAND = [
    # 3x3 conv 3->8 on 8x8 with BN: 8*8*8*3*9 MAdds, 216 weights + 16 BN.
    (ConvOp(cin=3, cout=8, k=3), 8, Cost(13824, 232)),
    # Same conv at stride 2 (4x4 out), grouped-free, with bias and no BN: 216 weights + 8 biases.
    (ConvOp(cin=3, cout=8, k=3, s=2, bn=False, bias=True), 8, Cost(4 * 4 * 8 * 3 * 9, 224)),
    # Grouped 1x1 conv 8->16, groups 4, on 7x7: 16*2 weights per pixel.
    (ConvOp(cin=8, cout=16, k=1, groups=4), 7, Cost(49 * 16 * 2, 32 + 32)),
    # Depthwise-separable 8->16 on 8x8: dw 8*9 = 72 weights (4608 MAdds) + BN 16; pwl 128 (8192) + BN 32.
    (MBConvOp(cin=8, mid=8, cout=16, has_pw=False), 8, Cost(4608 + 8192, 72 + 16 + 128 + 32)),
    # MBConv 8->16->8, stride 2 on 8x8, SE reduced 4:
    #   pw 8x8: 128 weights, 8192 MAdds, BN 32;  dw 4x4: 144 weights, 2304 MAdds, BN 32;
    #   SE: 16*4+4 and 4*16+16 params, 64+64 MAdds;  pwl 4x4: 128 weights, 2048 MAdds, BN 16.
    (MBConvOp(cin=8, mid=16, cout=8, s=2, se=SEOp(reduced=4)), 8,
     Cost(8192 + 2304 + 64 + 64 + 2048, 128 + 32 + 144 + 32 + 68 + 80 + 128 + 16)),
    # Odd input 7 at stride 2 -> 4x4 output; biases on pw/dw/pwl add 16+16+8.
    (MBConvOp(cin=8, mid=16, cout=8, s=2, bias=True), 7,
     Cost(49 * 128 + 16 * 144 + 16 * 128, 128 + 32 + 144 + 32 + 128 + 16 + 40)),
    (SkipOp(cin=8), 8, Cost(0, 0)),
]


@pytest.mark.parametrize(("op", "size", "expected"), HAND)
def test_op_cost_hand_counts(op, size, expected):
    assert op_cost(op, size) == expected
    assert count_module(build_op(op), (op.cin, size, size)) == expected


def test_pooled_head_conv_counted_at_1x1():
    arch = Arch.parse("input=3x32 stem=cn_k3_s2_c8_relu stages=ir_k3_e2_c8_relu "
                      "head=cn_k1_c16_relu,cn_k1_c24_hswish_b_nobn_pool classes=10")
    rows = layer_costs(arch)
    pooled = rows[-2]
    assert pooled.where == "head 1" and pooled.input_size == 1
    assert pooled.cost == Cost(16 * 24, 16 * 24 + 24)
    # The same conv before pooling would run on 16x16.
    assert rows[-3].input_size == 16 and rows[-3].cost == Cost(16 * 16 * 8 * 16, 8 * 16 + 32)
    assert arch_cost(arch) == count_module(ChildNet(arch), (3, 32, 32))
    bigger = Arch.parse(arch.encode().replace("input=3x32", "input=3x64"))
    assert layer_costs(bigger)[-2].cost == pooled.cost


def test_layer_costs_rows():
    arch = Arch.parse("input=3x15 stem=cn_k3_s2_c8_relu6 stages=ds_k3_c8_relu6|ir_r2_k3_s2_e6_c16_relu6,skip "
                      "head=cn_k1_c32_relu6 classes=10")
    rows = layer_costs(arch)
    assert [r.where for r in rows] == ["stem 0", "stage 0 block 0", "stage 1 block 0", "stage 1 block 1",
                                       "stage 1 block 2", "head 0", "classifier"]
    assert [r.input_size for r in rows] == [15, 8, 8, 4, 4, 4, 1]
    assert rows[1].op == "ds_k3_c8_relu6"
    assert rows[2].op == "ir_k3_s2_e6_c16_relu6"
    assert rows[4].op == "skip" and rows[4].cost == Cost()
    assert rows[-1].op == "fc_32x10" and rows[-1].cost == Cost(320, 330)
    assert sum((r.cost for r in rows), Cost()) == arch_cost(arch)


@pytest.mark.parametrize("seed", range(30))
def test_arch_cost_equals_hook_count(seed):
    rng = random.Random(seed)
    arch = random_arch(rng, input_size=rng.choice((8, 13, 15, 16, 28, 32)), in_channels=rng.choice((1, 3)),
                       num_classes=rng.choice((2, 10)))
    cost = arch_cost(arch)
    assert cost == count_module(ChildNet(arch), (arch.in_channels, arch.input_size, arch.input_size))
    rows = layer_costs(arch)
    assert len(rows) == len(list(arch.layers())) + 1
    assert sum((r.cost for r in rows), Cost()) == cost
    assert cost.madds > 0 and cost.params > 0


@pytest.mark.parametrize("seed", range(60))
def test_op_cost_equals_hook_count(seed):
    rng = random.Random(seed)
    cin = rng.choice((3, 4, 6, 8, 12))
    size = rng.choice((1, 2, 5, 7, 8, 9))
    op = random_op(rng, cin, stride=rng.choice((1, 2)))
    assert op_cost(op, size) == count_module(build_op(op), (cin, size, size))


def test_layer_input_sizes_follow_ceil_rule():
    for seed in range(20):
        arch = random_arch(random.Random(seed), input_size=15)
        size = 15
        for row, (_, op) in zip(layer_costs(arch), arch.layers()):
            assert row.input_size == (1 if isinstance(op, ConvOp) and op.after_pool else size)
            size = math.ceil(size / op.stride)


def test_count_module_restores_training_mode_and_ignores_frozen_params():
    net = ChildNet(Arch.parse("input=3x8 stem=cn_k3_c4_relu stages=ir_e2_c4_relu classes=3")).train()
    full = count_module(net, (3, 8, 8))
    assert net.training
    for p in net.stem.parameters():
        p.requires_grad_(False)
    frozen = count_module(net, (3, 8, 8))
    assert frozen.madds == full.madds
    assert full.params - frozen.params == 3 * 4 * 9 + 2 * 4
    assert count_module(nn.Linear(5, 7), (5,)) == Cost(35, 42)
