"""Property-based: random token soup for the arch grammar is parsed or refused with a SpecError, nothing else.

Soup is built from the grammar's own pieces (block types, token prefixes, flags,
numbers, separators) so that most draws get deep into the decoder, mixed with
arbitrary text for what a careless user might paste.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from spaces.arch import Arch
from spaces.encoding import BLOCK_TYPES, decode_op, encode_op
from spaces.errors import UserError

PROPERTY = settings(max_examples=200, deadline=None)

_WORDS = [*BLOCK_TYPES, "r", "k", "s", "c", "e", "m", "g", "pg", "lg", "se", "sr", "sa", "relu", "relu6", "hswish",
          "swish", "linear", "b", "nobn", "pool", "nores", "hsig", "0", "1", "2", "3", "8", "16", "0.25", ".", "-1",
          "1e3", "999999999", "9999999999", "", "x"]
_SEPARATORS = ["_", "_", "_", ",", "|", " ", "="]
_SECTIONS = ["input=", "stem=", "stages=", "head=", "classes=", "1x12", "3x32", "4", "10", "0"]

word = st.one_of(st.sampled_from(_WORDS), st.text(max_size=4))
soup = st.lists(st.tuples(word, st.sampled_from(_SEPARATORS)), max_size=10).map(
    lambda parts: "".join(w + sep for w, sep in parts))
# Plausible ops: a block type, its out channels, and at most one of each setting it allows, in any order, so
# that many draws are valid ops and the round trip is exercised; an odd setting makes some draws invalid.
_SETTINGS = {
    "r": st.integers(1, 3).map("r{}".format), "k": st.sampled_from(["k1", "k3", "k5", "k4"]),
    "s": st.sampled_from(["s1", "s2"]), "e": st.sampled_from(["e1", "e3", "e6", "e0.5", "e2.5", "e0"]),
    "g": st.sampled_from(["g1", "g2"]), "lg": st.just("lg2"), "se": st.sampled_from(["se0.25", "se1", "sr4"]),
    "act": st.sampled_from(["relu", "relu6", "hswish", "linear"]), "flag": st.sampled_from(["b", "nobn", "pool",
                                                                                          "nores", "hsig"]),
}
_KIND_SETTINGS = {"ir": ["r", "k", "s", "e", "lg", "se", "act", "flag"], "ds": ["r", "k", "s", "lg", "se", "act"],
                  "cn": ["r", "k", "s", "g", "act", "flag"], "skip": ["r"]}


@st.composite
def plausible_op(draw: st.DrawFn, kinds: tuple[str, ...] = BLOCK_TYPES) -> str:
    kind = draw(st.sampled_from(kinds))
    tokens = [draw(st.integers(1, 24).map("c{}".format))] if kind != "skip" or draw(st.booleans()) else []
    tokens += [draw(_SETTINGS[key]) for key in _KIND_SETTINGS[kind] if draw(st.booleans())]
    return "_".join([kind, *draw(st.permutations(tokens))])


op_soup = st.one_of(plausible_op(), plausible_op(), soup)


def _decodes(text: str) -> bool:
    try:
        decode_op(text, 8)
    except UserError:
        return False
    return "pool" not in text and not text.startswith("skip_c")  # only the head pools; skip keeps its channels


# Blocks that decode on their own, so that whole arch strings are often valid and their round trip is exercised.
_valid = plausible_op().filter(_decodes)
block = st.one_of(_valid, _valid, _valid, _valid, soup)
_valid_conv = plausible_op(("cn",)).filter(_decodes)
conv = st.one_of(_valid_conv, _valid_conv, _valid_conv, _valid_conv, soup)  # stem and head hold plain convs
_stage = st.lists(block, min_size=1, max_size=3).map(",".join)
plausible_arch = st.builds(
    "input={}x{} stem={} stages={} head={} classes={}".format, st.just(1), st.integers(4, 16), conv,
    st.lists(_stage, min_size=1, max_size=3).map("|".join), conv, st.integers(1, 10))
arch_soup = st.one_of(plausible_arch, st.lists(st.one_of(st.sampled_from(_SECTIONS), soup,
                                                         st.sampled_from(_SEPARATORS)), max_size=14).map("".join))


@PROPERTY
@given(text=st.one_of(op_soup, st.text(max_size=40)), cin=st.integers(1, 64))
def test_decode_op_returns_an_op_that_round_trips_or_a_user_error(text: str, cin: int) -> None:
    try:
        op = decode_op(text, cin)
    except UserError:
        return
    assert op.cin == cin
    assert decode_op(encode_op(op), cin) == op


@PROPERTY
@given(text=st.one_of(arch_soup, st.text(max_size=80)))
def test_arch_parse_returns_an_arch_that_round_trips_or_a_user_error(text: str) -> None:
    try:
        arch = Arch.parse(text)
    except UserError:
        return
    assert Arch.parse(arch.encode()) == arch


@PROPERTY
@given(text=plausible_arch, cut_at=st.integers(0, 200), junk=st.text(max_size=3))
def test_a_damaged_arch_string_is_parsed_or_refused(text: str, cut_at: int, junk: str) -> None:
    damaged = text[:cut_at] + junk + text[cut_at + 1:]
    try:
        arch = Arch.parse(damaged)
    except UserError:
        return
    assert Arch.parse(arch.encode()) == arch
