"""Seeded random architectures for property tests of the spaces package.

The generator builds op specs directly (not strings), so that it also reaches
specs the string grammar must recover without a hint: explicit mid channels that
no short ``e`` ratio gives, explicit SE reduced channels, grouped pointwise
convs, residuals switched off, biases, BN-free convs and pooled head convs.
Channel counts stay small so that built networks run in milliseconds on a CPU.
"""

from __future__ import annotations

import random
import re


from spaces.arch import Arch
from spaces.encoding import decode_op, encode_op
from spaces.ops import ACTIVATIONS, GATES, ConvOp, MBConvOp, Op, SEOp, SkipOp, SpecError

__all__ = ["random_arch", "random_conv", "random_mbconv", "random_op"]

_CHANNELS = (4, 6, 8, 12, 16)
_KERNELS = (1, 3, 5, 7)


def _groups(rng: random.Random, *channels: int) -> int:
    """A random group count dividing every one of ``channels`` (1 half of the time)."""
    options = [g for g in (2, 3, 4) if all(c % g == 0 for c in channels)]
    return rng.choice(options) if options and rng.random() < 0.5 else 1


def random_conv(rng: random.Random, cin: int, *, stride: int | None = None, after_pool: bool = False) -> ConvOp:
    cout = rng.choice(_CHANNELS)
    return ConvOp(
        cin=cin, cout=cout, k=1 if after_pool else rng.choice(_KERNELS),
        s=stride if stride is not None else rng.choice((1, 2)),
        groups=_groups(rng, cin, cout), act=rng.choice(ACTIVATIONS),
        bn=rng.random() < 0.8, bias=rng.random() < 0.3, after_pool=after_pool,
    )


def random_mbconv(rng: random.Random, cin: int, *, stride: int = 1, has_pw: bool | None = None) -> MBConvOp:
    has_pw = rng.random() < 0.7 if has_pw is None else has_pw
    cout = cin if rng.random() < 0.4 else rng.choice(_CHANNELS)
    if not has_pw:
        mid = cin
    elif rng.random() < 0.7:
        mid = max(1, round(cin * rng.choice((0.5, 1, 2, 3, 4, 6))))
    else:
        mid = rng.randint(max(1, cin // 2), 4 * cin)  # often no short e ratio: encoded as m<mid>
    se = None
    if rng.random() < 0.4:
        reduced = max(1, int(mid * 0.25)) if rng.random() < 0.5 else rng.randint(1, mid)
        se = SEOp(reduced=reduced, act=rng.choice(ACTIVATIONS), gate=rng.choice(GATES))
    allowed = stride == 1 and cin == cout
    return MBConvOp(
        cin=cin, mid=mid, cout=cout, k=rng.choice(_KERNELS), s=stride, act=rng.choice(ACTIVATIONS), se=se,
        has_pw=has_pw, residual=allowed and rng.random() < 0.8, bias=rng.random() < 0.2,
        pw_groups=_groups(rng, cin, mid) if has_pw else 1, pwl_groups=_groups(rng, mid, cout),
    )


def random_op(rng: random.Random, cin: int, *, stride: int = 1) -> Op:
    """A random stage block: ir, ds, skip (stride 1 only) or a plain conv."""
    kinds = ["ir", "ir", "ds", "cn"] + (["skip"] if stride == 1 else [])
    kind = rng.choice(kinds)
    if kind == "skip":
        return SkipOp(cin=cin)
    if kind == "cn":
        return random_conv(rng, cin, stride=stride)
    return random_mbconv(rng, cin, stride=stride, has_pw=kind == "ir")


def _repeat(op: Op, cin: int) -> Op | None:
    """``op``'s string decoded again at ``cin`` and stride 1, or None if that is not a valid op."""
    text = "_".join(t for t in encode_op(op).split("_") if not re.fullmatch(r"s\d+", t))
    try:
        return decode_op(text, cin)
    except SpecError:
        return None


def random_arch(rng: random.Random, input_size: int = 16, in_channels: int = 3, num_classes: int = 10, *,
                stem_convs: int | None = None, max_stages: int = 3, max_blocks: int = 3) -> Arch:
    """A valid random ``Arch``; ``stem_convs`` fixes the stem length (0-2 when None)."""
    channels = in_channels
    stem = []
    for _ in range(rng.randint(0, 2) if stem_convs is None else stem_convs):
        stem.append(random_conv(rng, channels))
        channels = stem[-1].cout
    stages = []
    for _ in range(rng.randint(1, max_stages)):
        stage = []
        for b in range(rng.randint(1, max_blocks)):
            stride = rng.choice((1, 2)) if b == 0 else 1
            if b and rng.random() < 0.4:
                # The previous block's string again at stride 1: exercises r<n> folding.
                again = _repeat(stage[-1], channels)
                if again is not None:
                    stage.append(again)
                    channels = again.cout
                    continue
            stage.append(random_op(rng, channels, stride=stride))
            channels = stage[-1].cout
        stages.append(tuple(stage))
    head = []
    if rng.random() < 0.7:
        head.append(random_conv(rng, channels, stride=1))
        channels = head[-1].cout
    if rng.random() < 0.4:
        head.append(random_conv(rng, channels, stride=1, after_pool=True))
    return Arch(input_size=input_size, in_channels=in_channels, num_classes=num_classes,
                stem=tuple(stem), stages=tuple(stages), head=tuple(head))
