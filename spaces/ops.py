"""Operation specs: the vocabulary every architecture and search space is written in.

An op is plain, frozen data (no torch): the builder turns it into a module, the
cost model counts it, the encoder prints it. Input channels are part of each
spec because cost and shape depend on them; the compact string encoding leaves
them out and recovers them from the previous layer (see :mod:`spaces.encoding`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from spaces.errors import UserError

__all__ = [
    "ACTIVATIONS",
    "GATES",
    "ConvOp",
    "MBConvOp",
    "SEOp",
    "SkipOp",
    "Op",
    "SpecError",
]

ACTIVATIONS = ("relu", "relu6", "hswish", "swish", "none")
GATES = ("sigmoid", "hsigmoid")


class SpecError(UserError):
    """An architecture or op spec is invalid; the message names the bad part."""


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(f"{name}={value!r} is not allowed; use one of {', '.join(allowed)}")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpecError(f"{name}={value!r} must be a positive integer")


def _check_kernel_stride(k: int, s: int) -> None:
    _check_positive(k=k, s=s)
    if k % 2 == 0:
        raise SpecError(f"kernel k={k} must be odd ('same' padding k//2 needs an odd kernel)")
    if s not in (1, 2):
        raise SpecError(f"stride s={s} must be 1 or 2")


def _check_groups(name: str, groups: int, cin: int, cout: int) -> None:
    _check_positive(**{name: groups})
    if cin % groups or cout % groups:
        raise SpecError(f"{name}={groups} must divide both in ({cin}) and out ({cout}) channels")


@dataclass(frozen=True)
class SEOp:
    """Squeeze-excitation on the expanded channels: pool, 1x1 reduce, act, 1x1 expand, gate."""

    reduced: int
    act: str = "relu"
    gate: str = "sigmoid"

    def __post_init__(self) -> None:
        _check_positive(se_reduced=self.reduced)
        _check_choice("se act", self.act, ACTIVATIONS)
        _check_choice("se gate", self.gate, GATES)


@dataclass(frozen=True)
class ConvOp:
    """Plain convolution + optional BN + activation (stems, heads, 1x1 projections).

    ``after_pool`` convs run on the 1x1 globally pooled vector (MobileNetV3's head).
    """

    cin: int
    cout: int
    k: int = 3
    s: int = 1
    groups: int = 1
    act: str = "relu"
    bn: bool = True
    bias: bool = False
    after_pool: bool = False

    def __post_init__(self) -> None:
        _check_positive(cin=self.cin, cout=self.cout)
        _check_kernel_stride(self.k, self.s)
        _check_groups("groups", self.groups, self.cin, self.cout)
        _check_choice("act", self.act, ACTIVATIONS)

    @property
    def stride(self) -> int:
        return self.s


@dataclass(frozen=True)
class MBConvOp:
    """Mobile inverted residual block (MBConv); without ``has_pw`` it is depthwise-separable.

    pw 1x1 cin->mid (if has_pw) -> kxk depthwise on mid -> [SE] -> pwl 1x1 mid->cout (linear),
    each conv followed by BN; the input is added when ``residual``.
    """

    cin: int
    mid: int
    cout: int
    k: int = 3
    s: int = 1
    act: str = "relu"
    se: SEOp | None = None
    has_pw: bool = True
    residual: bool = False
    bias: bool = False
    pw_groups: int = 1
    pwl_groups: int = 1

    def __post_init__(self) -> None:
        _check_positive(cin=self.cin, mid=self.mid, cout=self.cout)
        _check_kernel_stride(self.k, self.s)
        _check_choice("act", self.act, ACTIVATIONS)
        if not self.has_pw and self.mid != self.cin:
            raise SpecError(
                f"a block without pointwise expansion keeps its channels: mid={self.mid} must equal cin={self.cin}"
            )
        if self.has_pw:
            _check_groups("pw_groups", self.pw_groups, self.cin, self.mid)
        elif self.pw_groups != 1:
            raise SpecError(f"pw_groups={self.pw_groups} needs a pointwise expansion (has_pw); use 1")
        _check_groups("pwl_groups", self.pwl_groups, self.mid, self.cout)
        if self.residual and not self.residual_allowed:
            raise SpecError(
                f"residual needs stride 1 and cin == cout (got s={self.s}, cin={self.cin}, cout={self.cout})"
            )

    @property
    def residual_allowed(self) -> bool:
        return self.s == 1 and self.cin == self.cout

    @property
    def stride(self) -> int:
        return self.s

    @property
    def expansion(self) -> float:
        return self.mid / self.cin


@dataclass(frozen=True)
class SkipOp:
    """Identity: lets a searched layer disappear, which is how depth is searched."""

    cin: int

    def __post_init__(self) -> None:
        _check_positive(cin=self.cin)

    @property
    def cout(self) -> int:
        return self.cin

    @property
    def stride(self) -> int:
        return 1


Op = Union[ConvOp, MBConvOp, SkipOp]
