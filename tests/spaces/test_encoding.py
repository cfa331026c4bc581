"""Op string grammar: canonical strings, round trips, repeat folding and error messages."""

from __future__ import annotations

import random

import pytest

from spaces.encoding import decode_op, decode_ops, encode_op, encode_ops
from spaces.ops import ConvOp, MBConvOp, SEOp, SkipOp, SpecError
from tests.spaces.random_archs import random_conv, random_mbconv, random_op

# (op, its canonical string): every block type and every option of the grammar.
CANONICAL = [
    (ConvOp(cin=3, cout=8), "cn_k3_c8_relu"),
    (ConvOp(cin=8, cout=16, k=5, s=2, groups=4, act="hswish", bn=False, bias=True), "cn_k5_s2_g4_c16_hswish_b_nobn"),
    (ConvOp(cin=16, cout=32, k=1, act="none", after_pool=True), "cn_k1_c32_linear_pool"),
    (ConvOp(cin=4, cout=4, k=7, act="swish"), "cn_k7_c4_swish"),
    (MBConvOp(cin=16, mid=96, cout=24, k=3, s=2, act="relu6"), "ir_k3_s2_e6_c24_relu6"),
    (MBConvOp(cin=24, mid=144, cout=24, residual=True), "ir_k3_e6_c24_relu"),
    (MBConvOp(cin=24, mid=144, cout=24, residual=False), "ir_k3_e6_c24_relu_nores"),
    (MBConvOp(cin=16, mid=40, cout=8, k=5), "ir_k5_e2.5_c8_relu"),  # explicit mid written as a ratio
    (MBConvOp(cin=2000, mid=3, cout=8), "ir_k3_m3_c8_relu"),  # no short ratio gives mid 3 from 2000
    (MBConvOp(cin=16, mid=64, cout=32, pw_groups=4, pwl_groups=2), "ir_k3_e4_pg4_lg2_c32_relu"),
    (MBConvOp(cin=16, mid=64, cout=32, se=SEOp(reduced=16)), "ir_k3_e4_c32_se0.25_relu"),
    (MBConvOp(cin=16, mid=64, cout=32, se=SEOp(reduced=16, act="hswish", gate="hsigmoid"), act="hswish"),
     "ir_k3_e4_c32_se0.25_sahswish_hsig_hswish"),
    (MBConvOp(cin=16, mid=64, cout=32, se=SEOp(reduced=16, act="none")), "ir_k3_e4_c32_se0.25_salinear_relu"),
    (MBConvOp(cin=8, mid=8, cout=8, se=SEOp(reduced=20), has_pw=False), "ds_k3_c8_sr20_relu_nores"),  # reduced > mid
    (MBConvOp(cin=16, mid=96, cout=16, se=SEOp(reduced=7), residual=True), "ir_k3_e6_c16_se0.073_relu"),
    (MBConvOp(cin=16, mid=16, cout=24, k=5, s=2, has_pw=False, bias=True, act="swish"), "ds_k5_s2_c24_swish_b"),
    (MBConvOp(cin=16, mid=16, cout=16, has_pw=False, residual=True, pwl_groups=2), "ds_k3_lg2_c16_relu"),
    (MBConvOp(cin=8, mid=16, cout=8, bias=True, residual=True), "ir_k3_e2_c8_relu_b"),
    (SkipOp(cin=12), "skip"),
]


@pytest.mark.parametrize(("op", "text"), CANONICAL, ids=[t for _, t in CANONICAL])
def test_encode_op_gives_canonical_string(op, text):
    assert encode_op(op) == text


@pytest.mark.parametrize(("op", "text"), CANONICAL, ids=[t for _, t in CANONICAL])
def test_decode_inverts_encode(op, text):
    assert decode_op(text, op.cin) == op
    assert decode_op(encode_op(op), op.cin) == op


@pytest.mark.parametrize("seed", range(200))
def test_random_op_round_trip(seed):
    rng = random.Random(seed)
    cin = rng.choice((3, 4, 6, 8, 12, 16, 24))
    op = random_op(rng, cin, stride=rng.choice((1, 2)))
    assert decode_op(encode_op(op), cin) == op


def test_token_order_and_defaults_do_not_matter():
    expected = MBConvOp(cin=16, mid=96, cout=24, k=3, s=2, act="relu")
    assert decode_op("ir_c24_e6_s2", 16) == expected
    assert decode_op("ir_relu_c24_s2_k3_e6", 16) == expected


def test_explicit_mid_equals_matching_ratio():
    by_mid = decode_op("ir_m40_c8", 16)
    assert by_mid.mid == 40
    assert by_mid == decode_op("ir_e2.5_c8", 16)
    assert decode_op("ir_e0.3_c4", 3).mid == 1  # round(0.9)
    assert decode_op("ir_e1_c4", 7).mid == 7


def test_se_ratio_uses_floor_of_mid():
    assert decode_op("ir_e6_c24_se0.25", 16).se == SEOp(reduced=24)
    assert decode_op("ir_e3_c8_se0.1", 6).se == SEOp(reduced=1)  # int(1.8) == 1
    assert decode_op("ir_e1_c8_se0.01", 8).se == SEOp(reduced=1)  # floor 0 -> at least 1
    assert decode_op("ds_c8_sr3_saswish_hsig", 8).se == SEOp(reduced=3, act="swish", gate="hsigmoid")


def test_skip_with_matching_channels():
    assert decode_op("skip_c16", 16) == SkipOp(cin=16)
    assert decode_ops("skip_r3", 8) == [SkipOp(cin=8)] * 3


def test_repeat_first_takes_stride_rest_are_residual():
    ops = decode_ops("ir_r3_k3_s2_e6_c24", 16)
    assert ops == [
        MBConvOp(cin=16, mid=96, cout=24, k=3, s=2),
        MBConvOp(cin=24, mid=144, cout=24, k=3, s=1, residual=True),
        MBConvOp(cin=24, mid=144, cout=24, k=3, s=1, residual=True),
    ]
    assert [op.stride for op in ops] == [2, 1, 1]
    assert [op.residual for op in ops] == [False, True, True]


def test_repeat_with_nores_keeps_residual_off():
    ops = decode_ops("ir_r2_e2_c8_nores", 8)
    assert [op.residual for op in ops] == [False, False]
    assert encode_ops(ops) == ["ir_r2_k3_e2_c8_relu_nores"]


@pytest.mark.parametrize("text", [
    "ir_r3_k3_s2_e6_c24_relu6",
    "ds_r2_k5_c16_se0.25_hsig_hswish",
    "cn_r2_k3_s2_c8_relu",
    "skip_r4",
    "ir_r2_k3_e4_pg4_lg2_c32_relu",
])
def test_encode_ops_folds_repeats_back(text):
    ops = decode_ops(text, 16)
    assert len(ops) == int(text.split("_")[1][1:])
    assert encode_ops(ops) == [text]


def test_encode_ops_does_not_fold_distinct_ops():
    a = MBConvOp(cin=8, mid=48, cout=8, residual=True)
    b = MBConvOp(cin=8, mid=48, cout=8, residual=False)
    c = MBConvOp(cin=8, mid=48, cout=8, s=2)
    assert encode_ops([a, b]) == ["ir_k3_e6_c8_relu", "ir_k3_e6_c8_relu_nores"]
    assert encode_ops([a, c]) == ["ir_k3_e6_c8_relu", "ir_k3_s2_e6_c8_relu"]  # a stride-2 op starts a new run
    # A stride-2 op followed by its stride-1 twin folds: r<n> gives the stride to the first only.
    assert encode_ops([a, a, c, a]) == ["ir_r2_k3_e6_c8_relu", "ir_r2_k3_s2_e6_c8_relu"]
    assert decode_ops("ir_r2_k3_s2_e6_c8_relu", 8) == [c, a]
    assert encode_ops([]) == []


@pytest.mark.parametrize("seed", range(100))
def test_encode_ops_round_trip_on_random_sequences(seed):
    rng = random.Random(seed)
    cin = channels = rng.choice((4, 8, 16))
    ops = []
    for _ in range(rng.randint(1, 6)):
        if ops and rng.random() < 0.5 and ops[-1].cout == ops[-1].cin and ops[-1].stride == 1:
            ops.append(ops[-1])
        else:
            ops.append(random_mbconv(rng, channels, stride=rng.choice((1, 2))) if rng.random() < 0.7
                       else random_conv(rng, channels))
        channels = ops[-1].cout
    decoded = []
    for text in encode_ops(ops):
        decoded += decode_ops(text, decoded[-1].cout if decoded else cin)
    assert decoded == ops
    assert len(encode_ops(ops)) <= len(ops)


def test_decode_op_rejects_repeats():
    with pytest.raises(SpecError, match="2 ops where one is expected"):
        decode_op("ir_r2_e6_c8", 8)


@pytest.mark.parametrize(("text", "match"), [
    ("xx_c8", r"unknown block type 'xx'"),
    ("conv_c8", r"unknown block type 'conv'"),
    ("ir_e6_c8_foo", r"bad token 'foo'"),
    ("ir_e6.5x_c8", r"bad token 'e6.5x'"),
    ("ir_e6_c8_sa5", r"bad token 'sa5'"),
    ("ir_e6_c8_se0.25_sa5", r"bad token 'sa5'"),
    ("ir_e6_c8_se0.25_sagelu", r"bad token 'sagelu'"),
    ("ir_k4_e6_c8", r"in 'ir_k4_e6_c8'.*kernel k=4 must be odd"),
    ("cn_k2_c8", r"kernel k=2 must be odd"),
    ("ir_s3_e6_c8", r"in 'ir_s3_e6_c8'.*stride s=3 must be 1 or 2"),
    ("ir_e6", r"'ir_e6' needs c<n>"),
    ("cn_k3", r"'cn_k3' needs c<n>"),
    ("ir_e6_m12_c8", r"gives both e and m"),
    ("ir_c8", r"needs e<ratio> or m<mid"),
    ("ir_e0_c8", r"expansion 'e0'.*must be positive"),
    ("ir_g2_e6_c8", r"token 'g2' does not apply to a 'ir' block"),
    ("cn_e6_c8", r"token 'e6' does not apply to a 'cn' block"),
    ("ds_m4_c8", r"token 'm4' does not apply to a 'ds' block"),
    ("ds_e6_c8", r"token 'e6' does not apply to a 'ds' block"),
    ("ir_e6_c8_nobn", r"token 'nobn' does not apply to a 'ir' block"),
    ("cn_c8_nores", r"token 'nores' does not apply to a 'cn' block"),
    ("cn_c8_se0.25", r"token 'se0.25' does not apply to a 'cn' block"),
    ("skip_k3", r"token 'k3' does not apply to a 'skip' block"),
    ("skip_c16", r"skip keeps its channels: c16 differs from the input's 8"),
    ("ir_e6_c8_se1.5", r"SE ratio 'se1.5' must be in \(0, 1\]"),
    ("ir_e6_c8_se0", r"SE ratio 'se0' must be in \(0, 1\]"),
    ("ir_e6_c8_se0.25_sr2", r"se<ratio> or sr<reduced>, not both"),
    ("ds_c8_sarelu6", r"sa<act>/hsig configure squeeze-excite"),
    ("ds_c8_hsig", r"sa<act>/hsig configure squeeze-excite"),
    ("ir_k3_k5_e6_c8", r"token 'k5' repeats a setting"),
    ("ir_relu_relu6_e6_c8", r"token 'relu6' repeats a setting"),
    ("ir_r0_e6_c8", r"repeat r0 .* must be at least 1"),
    ("ir_e6_pg5_c8", r"pw_groups=5 must divide both in \(8\) and out \(48\)"),
    ("cn_g3_c8", r"groups=3 must divide both in \(8\) and out \(8\)"),
    ("cn_c0", r"in 'cn_c0'.*cout=0 must be a positive integer"),
])
def test_decode_errors_name_the_bad_part(text, match):
    with pytest.raises(SpecError, match=match):
        decode_ops(text, 8)


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)


@pytest.mark.parametrize(("make", "match"), [
    (lambda: MBConvOp(cin=8, mid=16, cout=16, residual=True), r"residual needs stride 1 and cin == cout"),
    (lambda: MBConvOp(cin=8, mid=8, cout=8, s=2, residual=True), r"got s=2"),
    (lambda: MBConvOp(cin=8, mid=16, cout=8, has_pw=False), r"mid=16 must equal cin=8"),
    (lambda: MBConvOp(cin=8, mid=16, cout=8, act="gelu"), r"act='gelu' is not allowed"),
    (lambda: SEOp(reduced=0), r"se_reduced=0 must be a positive integer"),
    (lambda: SEOp(reduced=4, gate="relu"), r"se gate='relu' is not allowed"),
    (lambda: ConvOp(cin=8, cout=8, k=3, s=True), r"s=True must be a positive integer"),
    (lambda: ConvOp(cin=8.0, cout=8), r"cin=8.0 must be a positive integer"),
    (lambda: SkipOp(cin=0), r"cin=0 must be a positive integer"),
])
def test_op_spec_validation(make, match):
    with pytest.raises(SpecError, match=match):
        make()
