"""Child-network builder: shapes, the 'same'/ceil spatial rule, residuals, SE, skips, gradients."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

from spaces.arch import Arch
from spaces.modules import ChildNet, ConvBNAct, MBConv, SqueezeExcite, activation, build_op
from spaces.ops import ConvOp, MBConvOp, SEOp, SkipOp
from tests.spaces.random_archs import random_arch

SIZES = (8, 15, 28, 32)


def _ceil_chain(size, strides):
    for s in strides:
        size = math.ceil(size / s)
    return size


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("seed", range(5))
def test_childnet_output_and_block_shapes(seed, size):
    rng = random.Random(1000 * size + seed)
    arch = random_arch(rng, input_size=size, in_channels=rng.choice((1, 3)), num_classes=rng.choice((2, 7)))
    net = ChildNet(arch).eval()
    seen = {}

    def record(name):
        def hook(_module, _inputs, out):
            seen[name] = out.shape
        return hook

    net.blocks.register_forward_hook(record("blocks"))
    net.head.register_forward_hook(record("head"))
    with torch.no_grad():
        out = net(torch.randn(2, arch.in_channels, size, size))
    assert out.shape == (2, arch.num_classes)
    assert torch.isfinite(out).all()
    after_blocks = _ceil_chain(size, [op.stride for op in (*arch.stem, *arch.blocks)])
    after_head = _ceil_chain(after_blocks, [op.stride for op in arch.head if not op.after_pool])
    assert seen["blocks"] == (2, arch.blocks[-1].cout, after_blocks, after_blocks)
    spatial_head = [op for op in arch.head if not op.after_pool]
    head_channels = spatial_head[-1].cout if spatial_head else arch.blocks[-1].cout
    assert seen["head"] == (2, head_channels, after_head, after_head)


@pytest.mark.parametrize(("size", "k", "strides", "expected"), [
    (15, 3, (2,), 8), (15, 1, (2, 2), 4), (15, 5, (2, 2, 2), 2), (28, 7, (2, 2, 2), 4), (13, 3, (2, 2, 2), 2),
    (32, 3, (2, 2, 2, 2, 2), 1), (9, 3, (1, 2, 1), 5), (1, 3, (2,), 1),
])
@pytest.mark.parametrize("kind", ["conv", "mbconv", "ds"])
def test_same_padding_ceil_rule(kind, size, k, strides, expected):
    make = {
        "conv": lambda s: ConvOp(cin=2, cout=2, k=k, s=s),
        "mbconv": lambda s: MBConvOp(cin=2, mid=4, cout=2, k=k, s=s),
        "ds": lambda s: MBConvOp(cin=2, mid=2, cout=2, k=k, s=s, has_pw=False),
    }[kind]
    net = nn.Sequential(*(build_op(make(s)) for s in strides)).eval()
    assert net(torch.randn(1, 2, size, size)).shape == (1, 2, expected, expected)
    assert _ceil_chain(size, strides) == expected


def test_childnet_structure_follows_arch():
    arch = Arch.parse("input=3x16 stem=cn_k3_s2_c8_relu6,cn_k1_c8_linear_b_nobn "
                      "stages=ds_k3_c8_relu|ir_k5_s2_e3_c12_se0.25_hswish,skip,cn_k3_g4_c16_swish "
                      "head=cn_k1_c32_hswish,cn_k1_c24_hswish_b_nobn_pool classes=5")
    net = ChildNet(arch)
    assert len(net.stem) == 2 and len(net.blocks) == 4 and len(net.head) == 1 and len(net.pooled_head) == 1
    assert isinstance(net.blocks[0], MBConv) and isinstance(net.blocks[0].pw, nn.Identity)
    assert isinstance(net.blocks[1].pw, ConvBNAct)
    assert type(net.blocks[2]) is nn.Identity
    assert isinstance(net.blocks[3], ConvBNAct)
    assert (net.classifier.in_features, net.classifier.out_features) == (24, 5)
    assert net.classifier.bias is not None


def test_conv_module_matches_spec():
    op = ConvOp(cin=4, cout=8, k=5, s=2, groups=2, act="hswish", bn=True, bias=True)
    module = build_op(op)
    conv, bn, act = module
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.groups) == (
        4, 8, (5, 5), (2, 2), (2, 2), 2)
    assert conv.bias is not None
    assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == 8
    assert isinstance(act, nn.Hardswish)
    bare = build_op(ConvOp(cin=4, cout=8, k=1, act="none", bn=False))
    assert len(bare) == 2 and isinstance(bare[1], nn.Identity) and bare[0].bias is None


def test_mbconv_module_matches_spec():
    op = MBConvOp(cin=8, mid=24, cout=16, k=5, s=2, act="relu6", pw_groups=2, pwl_groups=4, bias=True)
    m = build_op(op)
    assert (m.pw[0].in_channels, m.pw[0].out_channels, m.pw[0].groups, m.pw[0].kernel_size) == (8, 24, 2, (1, 1))
    assert (m.dw[0].in_channels, m.dw[0].groups, m.dw[0].kernel_size, m.dw[0].stride) == (24, 24, (5, 5), (2, 2))
    assert (m.pwl[0].out_channels, m.pwl[0].groups) == (16, 4)
    assert all(layer[0].bias is not None for layer in (m.pw, m.dw, m.pwl))
    assert isinstance(m.pw[2], nn.ReLU6) and isinstance(m.dw[2], nn.ReLU6)
    assert isinstance(m.pwl[2], nn.Identity)  # the projection is linear
    assert isinstance(m.se, nn.Identity) and m.residual is False


@pytest.mark.parametrize("name, cls", [
    ("relu", nn.ReLU), ("relu6", nn.ReLU6), ("hswish", nn.Hardswish), ("swish", nn.SiLU), ("none", nn.Identity),
    ("sigmoid", nn.Sigmoid), ("hsigmoid", nn.Hardsigmoid),
])
def test_activation_names(name, cls):
    assert type(activation(name)) is cls


def test_skip_is_identity():
    module = build_op(SkipOp(cin=8))
    assert type(module) is nn.Identity
    x = torch.randn(2, 8, 5, 5)
    assert module(x) is x


def _zero_projection(module: MBConv) -> MBConv:
    """Make the block's own branch output exactly zero (pwl BN weight and bias 0, eval mode)."""
    bn = module.pwl[1]
    with torch.no_grad():
        bn.weight.zero_()
        bn.bias.zero_()
    return module.eval()


@pytest.mark.parametrize(("op", "residual"), [
    (MBConvOp(cin=8, mid=16, cout=8, residual=True), True),
    (MBConvOp(cin=8, mid=16, cout=8, residual=False), False),
    (MBConvOp(cin=8, mid=8, cout=8, has_pw=False, residual=True, se=SEOp(reduced=2)), True),
    (MBConvOp(cin=8, mid=16, cout=12), False),
    (MBConvOp(cin=8, mid=16, cout=8, s=2), False),
])
def test_residual_present_exactly_when_spec_says(op, residual):
    module = _zero_projection(build_op(op))
    assert module.residual is residual
    x = torch.randn(2, op.cin, 6, 6)
    out = module(x)
    if residual:
        torch.testing.assert_close(out, x, rtol=0, atol=0)
    else:
        assert out.shape[1] == op.cout
        assert torch.count_nonzero(out) == 0


@pytest.mark.parametrize("seed", range(20))
def test_residual_and_se_flags_in_random_nets(seed):
    arch = random_arch(random.Random(seed))
    net = ChildNet(arch)
    for op, module in zip(arch.blocks, net.blocks, strict=True):
        if isinstance(op, MBConvOp):
            assert module.residual is op.residual
            assert isinstance(module.se, SqueezeExcite) is (op.se is not None)
            if op.se is not None:
                assert (module.se.reduce.in_channels, module.se.reduce.out_channels) == (op.mid, op.se.reduced)
                assert module.se.expand.out_channels == op.mid
        elif isinstance(op, SkipOp):
            assert type(module) is nn.Identity
        else:
            assert isinstance(module, ConvBNAct)


@pytest.mark.parametrize("spec", [SEOp(reduced=4), SEOp(reduced=3, act="hswish", gate="hsigmoid")])
def test_squeeze_excite_used_and_computes_gate(spec):
    op = MBConvOp(cin=4, mid=12, cout=4, se=spec, residual=True)
    module = build_op(op).eval()
    se = module.se
    assert isinstance(se, SqueezeExcite)
    assert type(se.act) is activation(spec.act).__class__ and type(se.gate) is activation(spec.gate).__class__
    assert se.reduce.bias is not None and se.expand.bias is not None
    calls = []
    se.register_forward_hook(lambda _m, inputs, out: calls.append((inputs[0], out)))
    module(torch.randn(2, 4, 7, 7))
    assert len(calls) == 1
    x, out = calls[0]
    pooled = x.mean((2, 3), keepdim=True)
    gate = se.gate(se.expand(se.act(se.reduce(pooled))))
    torch.testing.assert_close(out, x * gate)
    assert gate.shape == (2, 12, 1, 1)


@pytest.mark.parametrize("seed", range(10))
def test_gradients_reach_every_parameter(seed):
    rng = random.Random(seed)
    arch = random_arch(rng, input_size=rng.choice((8, 15, 16)))
    net = ChildNet(arch).train()
    x = torch.randn(2, arch.in_channels, arch.input_size, arch.input_size)
    loss = nn.functional.cross_entropy(net(x), torch.tensor([0, 1]))
    loss.backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert net.classifier.weight.grad.abs().sum() > 0


def test_dropout_is_applied_only_in_training():
    arch = Arch.parse("input=3x8 stages=ir_e2_c8 classes=4")
    net = ChildNet(arch, dropout=0.5)
    assert net.dropout.p == 0.5
    x = torch.randn(3, 3, 8, 8)
    net.eval()
    torch.testing.assert_close(net(x), net(x))
