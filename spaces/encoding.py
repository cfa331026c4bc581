"""Compact op strings, in the spirit of timm's ``ir_r2_k3_s2_e6_c24_se0.25``.

Grammar: a block type, then ``_``-separated tokens. Input channels are never
written: they come from the previous layer, so one string means the same op at
any position of a network.

Block types
    ``ir``    MBConv with a 1x1 expansion (``e<ratio>`` or ``m<mid>`` required)
    ``ds``    depthwise-separable: MBConv without expansion (mid = in channels)
    ``cn``    plain conv + BN + activation
    ``skip``  identity (``c`` may be given but must equal the input channels)

Tokens (defaults in brackets)
    ``r<n>``  repeat n times (at most 100), the first with the given stride, the rest stride 1 [1]
    ``k<n>``  kernel [3]                 ``s<n>``  stride [1]
    ``c<n>``  out channels (required)    ``e<x>``  expansion, mid = round(cin*x)
    ``m<n>``  explicit mid channels      ``g<n>``  conv groups [1]
    ``pg<n>``/``lg<n>``  pw / pwl groups [1]
    ``se<x>`` squeeze-excite, reduced = max(1, int(mid*x)); ``sr<n>`` explicit reduced
    ``sa<act>`` SE activation [relu]    ``hsig``  hard-sigmoid SE gate [sigmoid]
    ``relu`` ``relu6`` ``hswish`` ``swish`` ``linear``  activation [relu]
    ``b``  conv biases   ``nobn``  no BN (cn)   ``pool``  runs after global pooling (cn)
    ``nores``  no residual where one is allowed (stride 1 and cin == cout)
"""

from __future__ import annotations

import re

from spaces.errors import cut
from spaces.ops import ConvOp, MBConvOp, Op, SEOp, SkipOp, SpecError

__all__ = ["decode_op", "decode_ops", "encode_op", "encode_ops", "BLOCK_TYPES"]

BLOCK_TYPES = ("ir", "ds", "cn", "skip")
_ACT_TOKENS = {"relu": "relu", "relu6": "relu6", "hswish": "hswish", "swish": "swish", "linear": "none"}
_ACT_NAMES = {v: k for k, v in _ACT_TOKENS.items()}
_FLAGS = ("b", "nobn", "pool", "nores", "hsig")
# Longer prefixes first so that "se0.25" is not read as stride "e0.25".
_PREFIXES = ("se", "sr", "sa", "pg", "lg", "r", "k", "s", "c", "e", "m", "g")
# Mobile networks repeat a block a handful of times; a bound keeps r1000000000 from building a billion ops.
MAX_REPEATS = 100
_INT = re.compile(r"^\d+$")
_NUM = re.compile(r"^\d+(\.\d+)?$")
_ALLOWED = {
    "ir": {"r", "k", "s", "c", "e", "m", "pg", "lg", "se", "sr", "sa", "hsig", "act", "b", "nores"},
    "ds": {"r", "k", "s", "c", "lg", "se", "sr", "sa", "hsig", "act", "b", "nores"},
    "cn": {"r", "k", "s", "c", "g", "act", "b", "nobn", "pool"},
    "skip": {"r", "c"},
}


def _quoted(text: str) -> str:
    """An op string as echoed in errors: quoted, and cut if it is absurdly long."""
    return repr(cut(text))


def _parse_tokens(text: str) -> tuple[str, dict[str, str]]:
    parts = text.strip().split("_")
    kind = parts[0]
    if kind not in BLOCK_TYPES:
        raise SpecError(f"unknown block type {_quoted(kind)} in {_quoted(text)}; use one of {', '.join(BLOCK_TYPES)}")
    tokens: dict[str, str] = {}
    for token in parts[1:]:
        key = _token_key(token, text)
        if key in tokens:
            raise SpecError(f"token {_quoted(token)} repeats a setting in {_quoted(text)}")
        if key not in _ALLOWED[kind]:
            raise SpecError(f"token {_quoted(token)} does not apply to a {_quoted(kind)} block in {_quoted(text)}")
        tokens[key] = token
    return kind, tokens


def _token_key(token: str, text: str) -> str:
    if token in _ACT_TOKENS:
        return "act"
    if token in _FLAGS:
        return token
    for prefix in _PREFIXES:
        if token.startswith(prefix) and len(token) > len(prefix):
            value = token[len(prefix):]
            if prefix == "sa" and value in _ACT_TOKENS:
                return prefix
            if prefix in ("se", "e") and _NUM.match(value):
                return prefix
            if _INT.match(value) and prefix != "sa":
                return prefix
    raise SpecError(f"bad token {_quoted(token)} in {_quoted(text)}; see spaces.encoding for the grammar")


def _int(tokens: dict[str, str], key: str, default: int | None = None) -> int | None:
    if key not in tokens:
        return default
    digits = tokens[key][len(key):]
    if len(digits) > 9:  # no layer has a billion channels; int() of a huge digit string is slow or refused
        raise SpecError(f"{cut(tokens[key], 20)!r}: the number is too large")
    return int(digits)


def _required_int(tokens: dict[str, str], key: str, text: str, what: str) -> int:
    value = _int(tokens, key)
    if value is None:
        raise SpecError(f"{_quoted(text)} needs {key}<n> ({what})")
    return value


def decode_ops(text: str, cin: int) -> list[Op]:
    """Decode one op string (which may repeat, ``r<n>``) given its input channels."""
    kind, tokens = _parse_tokens(text)
    repeats = _int(tokens, "r", 1)
    if not 1 <= repeats <= MAX_REPEATS:
        raise SpecError(f"repeat r{cut(str(repeats), 20)} in {_quoted(text)} must be at least 1 and at most "
                        f"{MAX_REPEATS}")
    ops: list[Op] = []
    for i in range(repeats):
        op = _decode_one(kind, tokens, text, cin, first=(i == 0))
        ops.append(op)
        cin = op.cout
    return ops


def decode_op(text: str, cin: int) -> Op:
    """Decode an op string that stands for exactly one op."""
    ops = decode_ops(text, cin)
    if len(ops) != 1:
        raise SpecError(f"{_quoted(text)} stands for {len(ops)} ops where one is expected (drop the r token)")
    return ops[0]


def _decode_one(kind: str, tokens: dict[str, str], text: str, cin: int, first: bool) -> Op:
    try:
        return _build_op(kind, tokens, text, cin, first)
    except SpecError as err:
        if _quoted(text) in str(err):
            raise
        raise SpecError(f"in {_quoted(text)}: {err}") from None


def _build_op(kind: str, tokens: dict[str, str], text: str, cin: int, first: bool) -> Op:
    if kind == "skip":
        cout = _int(tokens, "c", cin)
        if cout != cin:
            raise SpecError(f"skip keeps its channels: c{cout} differs from the input's {cin}")
        return SkipOp(cin=cin)
    cout = _required_int(tokens, "c", text, "out channels")
    k = _int(tokens, "k", 3)
    s = _int(tokens, "s", 1) if first else 1
    act = _ACT_TOKENS[tokens["act"]] if "act" in tokens else "relu"
    bias = "b" in tokens
    if kind == "cn":
        return ConvOp(cin=cin, cout=cout, k=k, s=s, groups=_int(tokens, "g", 1), act=act,
                      bn="nobn" not in tokens, bias=bias, after_pool="pool" in tokens)
    mid = _mid_channels(kind, tokens, text, cin)
    residual_allowed = s == 1 and cin == cout
    return MBConvOp(
        cin=cin, mid=mid, cout=cout, k=k, s=s, act=act, se=_se(tokens, mid), has_pw=(kind == "ir"),
        residual=residual_allowed and "nores" not in tokens, bias=bias,
        pw_groups=_int(tokens, "pg", 1), pwl_groups=_int(tokens, "lg", 1),
    )


def _mid_channels(kind: str, tokens: dict[str, str], text: str, cin: int) -> int:
    if kind == "ds":
        return cin
    if "m" in tokens and "e" in tokens:
        raise SpecError(f"{_quoted(text)} gives both e and m: keep one")
    if "m" in tokens:
        return _int(tokens, "m")
    if "e" not in tokens:
        raise SpecError(f"{_quoted(text)} needs e<ratio> or m<mid channels> (an ir block expands)")
    ratio = float(tokens["e"][1:])
    if ratio <= 0:
        raise SpecError(f"expansion {_quoted(tokens['e'])} in {_quoted(text)} must be positive")
    if ratio > 1000:  # also keeps round(cin * ratio) finite
        raise SpecError(f"expansion {_quoted(tokens['e'])} in {_quoted(text)} is absurd; at most e1000")
    return _scaled("e", cin, ratio)


def _scaled(prefix: str, whole: int, ratio: float) -> int:
    """The channels ``prefix<ratio>`` gives from ``whole``: an expansion rounds, a squeeze-excite ratio truncates."""
    return max(1, round(whole * ratio)) if prefix == "e" else max(1, int(whole * ratio))


def _se(tokens: dict[str, str], mid: int) -> SEOp | None:
    has_se = "se" in tokens or "sr" in tokens
    if not has_se:
        if "sa" in tokens or "hsig" in tokens:
            raise SpecError("sa<act>/hsig configure squeeze-excite: add se<ratio> or sr<n>")
        return None
    if "se" in tokens and "sr" in tokens:
        raise SpecError("give squeeze-excite as se<ratio> or sr<reduced>, not both")
    if "sr" in tokens:
        reduced = _int(tokens, "sr")
    else:
        ratio = float(tokens["se"][2:])
        if not 0 < ratio <= 1:
            raise SpecError(f"SE ratio {_quoted(tokens['se'])} must be in (0, 1]")
        reduced = _scaled("se", mid, ratio)
    act = _ACT_TOKENS[tokens["sa"][2:]] if "sa" in tokens else "relu"
    return SEOp(reduced=reduced, act=act, gate="hsigmoid" if "hsig" in tokens else "sigmoid")


def _fmt(x: float) -> str:
    return f"{x:g}"


def _ratio_token(prefix: str, whole: int, part: int) -> str | None:
    """``prefix<ratio>`` whose decoding gives back ``part`` from ``whole``, if a short one exists."""
    for digits in (0, 1, 2, 3):
        ratio = round(part / whole, digits)
        if 0 < ratio and (prefix == "e" or ratio <= 1) and _scaled(prefix, whole, ratio) == part:
            return f"{prefix}{_fmt(ratio)}"
    return None


def encode_op(op: Op) -> str:
    """The canonical string of one op (no repeat token); ``decode_op`` inverts it."""
    if isinstance(op, SkipOp):
        return "skip"
    tokens = [f"k{op.k}"]
    if op.s != 1:
        tokens.append(f"s{op.s}")
    if isinstance(op, ConvOp):
        kind = "cn"
        if op.groups != 1:
            tokens.append(f"g{op.groups}")
        tokens.append(f"c{op.cout}")
        tokens.append(_ACT_NAMES[op.act])
        tokens += [flag for flag, on in (("b", op.bias), ("nobn", not op.bn), ("pool", op.after_pool)) if on]
        return "_".join([kind, *tokens])
    kind = "ir" if op.has_pw else "ds"
    if op.has_pw:
        tokens.append(_ratio_token("e", op.cin, op.mid) or f"m{op.mid}")
        if op.pw_groups != 1:
            tokens.append(f"pg{op.pw_groups}")
    if op.pwl_groups != 1:
        tokens.append(f"lg{op.pwl_groups}")
    tokens.append(f"c{op.cout}")
    if op.se is not None:
        tokens.append(_ratio_token("se", op.mid, op.se.reduced) or f"sr{op.se.reduced}")
        if op.se.act != "relu":
            tokens.append(f"sa{_ACT_NAMES[op.se.act]}")
        if op.se.gate == "hsigmoid":
            tokens.append("hsig")
    tokens.append(_ACT_NAMES[op.act])
    if op.bias:
        tokens.append("b")
    if op.residual_allowed and not op.residual:
        tokens.append("nores")
    return "_".join([kind, *tokens])


def encode_ops(ops: list[Op]) -> list[str]:
    """Encode a sequence, folding runs that ``r<n>`` reproduces exactly into one string."""
    out: list[str] = []
    run_text, run_len = "", 0
    for op in ops:
        text = encode_op(op)
        if run_len and op.stride == 1 and _without_stride(text) == _without_stride(run_text):
            run_len += 1
            continue
        if run_len:
            out.append(_with_repeat(run_text, run_len))
        run_text, run_len = text, 1
    if run_len:
        out.append(_with_repeat(run_text, run_len))
    return out


def _without_stride(text: str) -> str:
    return "_".join(t for t in text.split("_") if not re.fullmatch(r"s\d+", t))


def _with_repeat(text: str, n: int) -> str:
    if n == 1:
        return text
    kind, _, rest = text.partition("_")
    return f"{kind}_r{n}_{rest}" if rest else f"{kind}_r{n}"
