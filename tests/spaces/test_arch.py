"""``Arch``: the one-line string form, the JSON form, validation and its error messages."""

from __future__ import annotations

import json
import random

import pytest

from spaces.arch import Arch
from spaces.ops import ConvOp, MBConvOp, SkipOp, SpecError
from tests.spaces.random_archs import random_arch

EXAMPLE = ("input=1x28 stem=cn_k3_c16_relu6 stages=ds_k3_c16_relu6|ir_r2_k3_s2_e6_c24_relu6 "
           "head=cn_k1_c256_relu6 classes=10")


def test_parse_example():
    arch = Arch.parse(EXAMPLE)
    assert (arch.in_channels, arch.input_size, arch.num_classes) == (1, 28, 10)
    assert arch.stem == (ConvOp(cin=1, cout=16, k=3, act="relu6"),)
    assert arch.stages == (
        (MBConvOp(cin=16, mid=16, cout=16, act="relu6", has_pw=False, residual=True),),
        (MBConvOp(cin=16, mid=96, cout=24, s=2, act="relu6"),
         MBConvOp(cin=24, mid=144, cout=24, act="relu6", residual=True)),
    )
    assert arch.head == (ConvOp(cin=24, cout=256, k=1, act="relu6"),)
    assert len(arch.blocks) == 3
    assert arch.feature_channels == 256
    assert [where for where, _ in arch.layers()] == [
        "stem 0", "stage 0 block 0", "stage 1 block 0", "stage 1 block 1", "head 0"]


def test_encode_is_canonical_and_stable():
    assert Arch.parse(EXAMPLE).encode() == EXAMPLE
    assert str(Arch.parse(EXAMPLE)) == EXAMPLE
    loose = "classes=10  input=1x28 stages=ds_c16_relu6|ir_c24_e6_s2_relu6,ir_e6_c24_relu6  stem=cn_c16_relu6 head=cn_k1_relu6_c256"
    assert Arch.parse(loose) == Arch.parse(EXAMPLE)
    assert Arch.parse(loose).encode() == EXAMPLE


def test_stem_and_head_may_be_empty():
    arch = Arch.parse("input=3x8 stages=ir_e2_c8 classes=4")
    assert arch.stem == () and arch.head == ()
    assert arch.feature_channels == 8
    assert arch.encode() == "input=3x8 stem= stages=ir_k3_e2_c8_relu head= classes=4"
    assert Arch.parse(arch.encode()) == arch


def test_pooled_head_conv_round_trip():
    text = "input=3x16 stem=cn_k3_s2_c8_relu stages=ir_k3_e4_c8_relu head=cn_k1_c16_hswish,cn_k1_c32_hswish_b_nobn_pool classes=5"
    arch = Arch.parse(text)
    assert [op.after_pool for op in arch.head] == [False, True]
    assert arch.encode() == text


def test_to_dict_layout():
    data = Arch.parse(EXAMPLE).to_dict()
    assert data == {
        "format": "autospace-arch-string/1",
        "input": "1x28",
        "stem": ["cn_k3_c16_relu6"],
        "stages": [["ds_k3_c16_relu6"], ["ir_r2_k3_s2_e6_c24_relu6"]],
        "head": ["cn_k1_c256_relu6"],
        "classes": 10,
    }
    assert Arch.from_json(Arch.parse(EXAMPLE).to_json()) == Arch.parse(EXAMPLE)
    assert json.loads(Arch.parse(EXAMPLE).to_json()) == data


SEEDS = range(50)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_arch_string_round_trip(seed):
    rng = random.Random(seed)
    arch = random_arch(rng, input_size=rng.choice((8, 15, 16, 28, 32)), in_channels=rng.choice((1, 3)),
                       num_classes=rng.choice((2, 10)))
    text = arch.encode()
    assert Arch.parse(text) == arch
    assert Arch.parse(text).encode() == text


@pytest.mark.parametrize("seed", SEEDS)
def test_random_arch_json_round_trip(seed):
    arch = random_arch(random.Random(seed))
    assert Arch.from_json(arch.to_json()) == arch
    assert Arch.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch


def test_random_archs_are_varied():
    """The generator reaches every feature the round-trip tests are meant to exercise."""
    archs = [random_arch(random.Random(seed)) for seed in SEEDS]
    ops = [op for a in archs for _, op in a.layers()]
    text = " ".join(a.encode() for a in archs)
    assert len({a.encode() for a in archs}) == len(archs)
    assert any(isinstance(op, SkipOp) for op in ops)
    assert any(isinstance(op, ConvOp) for a in archs for op in a.blocks)
    mb = [op for op in ops if isinstance(op, MBConvOp)]
    assert {op.has_pw for op in mb} == {True, False}
    assert {op.residual for op in mb if op.residual_allowed} == {True, False}
    assert any(op.se is not None and op.se.gate == "hsigmoid" for op in mb)
    assert any(op.pw_groups > 1 for op in mb) and any(op.pwl_groups > 1 for op in mb)
    assert any(op.stride == 2 for op in ops)
    assert {op.k for op in ops if not isinstance(op, SkipOp)} == {1, 3, 5, 7}
    assert any(op.after_pool for a in archs for op in a.head)
    assert {len(a.stem) for a in archs} == {0, 1, 2}
    for token in ("_r2_", "_sr", "_sa", "_nobn", "_b", "_g"):
        assert token in text, token


@pytest.mark.parametrize(("text", "match"), [
    ("input=3x8 stages=ir_e6_c8 classes=10 foo=1", r"bad section 'foo=1'"),
    ("input=3x8 stage=ir_e6_c8 classes=10", r"bad section 'stage=ir_e6_c8'"),
    ("input=3x8 stages=ir_e6_c8 classes", r"bad section 'classes'"),
    ("input=3x8 stages=ir_e6_c8 classes=10 classes=3", r"section classes= appears twice"),
    ("input=3x8 classes=10", r"lacks stages="),
    ("stem=cn_c8 stages=ir_e6_c8", r"lacks input=, classes="),
    ("input=3*8 stages=ir_e6_c8 classes=10", r"input='3\*8' must be CHANNELSxSIZE"),
    ("input=3x stages=ir_e6_c8 classes=10", r"input='3x' must be CHANNELSxSIZE"),
    ("input=28 stages=ir_e6_c8 classes=10", r"input='28' must be CHANNELSxSIZE"),
    ("input=3x28x28 stages=ir_e6_c8 classes=10", r"input='3x28x28' must be CHANNELSxSIZE"),
    ("input=3x0 stages=ir_e6_c8 classes=10", r"input=.3x0.: channels and size must be positive"),
    ("input=3x8 stages=ir_e6_c8 classes=ten", r"classes='ten' must be a positive integer"),
    ("input=3x8 stages=ir_e6_c8 classes=0", r"num_classes=0 must be a positive integer"),
    ("input=3x8 stem=ir_e1_c8 stages=ir_e6_c8 classes=10", r"stem may hold only cn_ convs"),
    ("input=3x8 stages=ir_e6_c8 head=skip classes=10", r"head may hold only cn_ convs"),
    ("input=3x8 stages=ir_e6_c8 head=cn_c8_pool,cn_c8 classes=10", r"after all the others"),
    ("input=3x8 stem=cn_c8_pool stages=ir_e6_c8 classes=10", r"stem 0: only head convs may run after pooling"),
    ("input=3x8 stages=ir_e6_c8,cn_c8_pool classes=10", r"stage 0 block 1: only head convs may run after pooling"),
    ("input=3x8 stages=ir_e6_c8|ir_k4_e6_c8 classes=10", r"in 'ir_k4_e6_c8'.*kernel k=4"),
    ("input=3x8 stages=ir_e6_c8,skip_c16 classes=10", r"skip keeps its channels"),
])
def test_parse_errors_name_the_bad_part(text, match):
    with pytest.raises(SpecError, match=match):
        Arch.parse(text)


def _arch(**overrides):
    fields = dict(input_size=8, in_channels=3, num_classes=10, stem=(ConvOp(cin=3, cout=8),),
                  stages=((MBConvOp(cin=8, mid=16, cout=8, residual=True),),), head=(ConvOp(cin=8, cout=16, k=1),))
    fields.update(overrides)
    return Arch(**fields)


def test_direct_construction_valid():
    assert _arch().feature_channels == 16


@pytest.mark.parametrize(("overrides", "match"), [
    ({"stages": ((MBConvOp(cin=16, mid=16, cout=16, has_pw=False),),)},
     r"stage 0 block 0 expects 16 input channels but receives 8"),
    ({"stem": (ConvOp(cin=1, cout=8),)}, r"stem 0 expects 1 input channels but receives 3"),
    ({"head": (ConvOp(cin=8, cout=16, k=1), ConvOp(cin=8, cout=16, k=1))}, r"head 1 expects 8 input channels but receives 16"),
    ({"stages": ((SkipOp(cin=8),), (SkipOp(cin=4),))}, r"stage 1 block 0 expects 4 input channels but receives 8"),
    ({"input_size": 0}, r"input_size=0 must be a positive integer"),
    ({"num_classes": True}, r"num_classes=True must be a positive integer"),
    ({"in_channels": 0, "stem": ()}, r"in_channels=0 must be a positive integer"),
    ({"in_channels": 3.0}, r"in_channels=3.0 must be a positive integer"),
])
def test_direct_construction_errors(overrides, match):
    with pytest.raises(SpecError, match=match):
        _arch(**overrides)


@pytest.mark.parametrize(("data", "match"), [
    ({"input": "3x8", "stages": [["ir_e6_c8"]], "classes": 10}, r"format=None; expected 'autospace-arch-string/1'"),
    ({"format": "autospace-arch-string/2", "input": "3x8", "stages": [], "classes": 10}, r"format='autospace-arch-string/2'"),
    ({"format": "autospace-arch-string/1", "input": "3x8"}, r"lacks keys stages, classes"),
    ({"format": "autospace-arch-string/1", "input": "3x8", "stages": [["ir_e6_c8"]], "classes": "x"},
     r"classes='x' must be a positive integer"),
    ({"format": "autospace-arch-string/1", "input": "3x8", "stages": [["ir_e6_c8"]], "head": ["ir_e1_c8"], "classes": 2},
     r"head may hold only cn_ convs"),
])
def test_from_dict_errors(data, match):
    with pytest.raises(SpecError, match=match):
        Arch.from_dict(data)


@pytest.mark.parametrize("text, expected", [
    ("input=1x8 stem= stages=ds_k3_c8||ds_k3_c8 head= classes=2", "stage 1 of stages= is empty"),
    ("input=1x8 stem= stages=ds_k3_c8| head= classes=2", "stage 1 of stages= is empty"),
    ("input=1x8 stem= stages=ir_r100000000_k3_e3_c8 head= classes=2", "must be at least 1 and at most 100"),
    ("input=1x8 stem= stages=ds_k3_c" + "9" * 5000 + " head= classes=2", "the number is too large"),
    ("input=1x8 stem= stages=ir_k3_e" + "9" * 400 + "_c8 head= classes=2", "at most e1000"),
])
def test_malformed_arch_strings_are_spec_errors(text: str, expected: str) -> None:
    with pytest.raises(SpecError, match=expected) as caught:
        Arch.parse(text)
    assert len(str(caught.value)) < 600  # the input is echoed cut, never whole


def test_garbage_is_echoed_cut() -> None:
    with pytest.raises(SpecError) as caught:
        Arch.parse("x" * 1_000_000)
    assert len(str(caught.value)) < 400 and "characters)" in str(caught.value)


@pytest.mark.parametrize("sections, expected", [
    ({"input": "1x8", "stages": "ds_k3_c8", "classes": 2}, "stages='ds_k3_c8' must be a list of stages"),
    ({"input": "1x8", "stages": ["ds_k3_c8"], "classes": 2}, "stage 0='ds_k3_c8' must be a list of op strings"),
    ({"input": "1x8", "stem": 5, "stages": [], "classes": 2}, "stem=5 must be a list of op strings"),
])
def test_wrong_types_in_the_json_form_are_spec_errors(sections: dict, expected: str) -> None:
    with pytest.raises(SpecError, match=expected):
        Arch.from_dict({"format": "autospace-arch-string/1", **sections})
