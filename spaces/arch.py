"""``Arch``: a whole child network as plain, printable data.

String form (one line, sections separated by spaces)::

    input=1x28 stem=cn_k3_c16_relu6 stages=ds_k3_c16_relu6|ir_r2_k3_s2_e6_c24_relu6 head=cn_k1_c256_relu6 classes=10

``stages`` separates stages with ``|`` and blocks inside a stage with ``,``;
``stem`` and ``head`` list convs separated by ``,`` (either may be empty). A
linear classifier with bias always follows global average pooling. The JSON form
(:meth:`Arch.to_dict`) holds the same op strings in lists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

from spaces.encoding import decode_ops, encode_ops
from spaces.errors import cut
from spaces.ops import ConvOp, Op, SpecError

__all__ = ["Arch"]

_SECTIONS = ("input", "stem", "stages", "head", "classes")


@dataclass(frozen=True)
class Arch:
    """A child network: input shape, stem convs, stages of blocks, head convs, classes."""

    input_size: int
    in_channels: int
    num_classes: int
    stem: tuple[ConvOp, ...]
    stages: tuple[tuple[Op, ...], ...]
    head: tuple[ConvOp, ...]

    def __post_init__(self) -> None:
        for name, value in (("input_size", self.input_size), ("in_channels", self.in_channels),
                            ("num_classes", self.num_classes)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SpecError(f"{name}={cut(repr(value))} must be a positive integer")
        if any(not stage for stage in self.stages):
            raise SpecError("every stage needs at least one block (an empty stage cannot be written as a string)")
        channels = self.in_channels
        for where, op in self.layers():
            if op.cin != channels:
                raise SpecError(f"{where} expects {op.cin} input channels but receives {channels}")
            if isinstance(op, ConvOp) and op.after_pool and not where.startswith("head"):
                raise SpecError(f"{where}: only head convs may run after pooling")
            channels = op.cout
        pooled = [op.after_pool for op in self.head]
        if pooled != sorted(pooled):
            raise SpecError("head convs after pooling ('pool') must come after all the others")

    def layers(self) -> Iterator[tuple[str, Op]]:
        """Every op in forward order with a readable location (``stage 2 block 1``)."""
        for i, op in enumerate(self.stem):
            yield f"stem {i}", op
        for s, stage in enumerate(self.stages):
            for b, op in enumerate(stage):
                yield f"stage {s} block {b}", op
        for i, op in enumerate(self.head):
            yield f"head {i}", op

    @property
    def blocks(self) -> tuple[Op, ...]:
        return tuple(op for stage in self.stages for op in stage)

    @property
    def feature_channels(self) -> int:
        """Channels entering the classifier (the input's when there are no layers)."""
        channels = self.in_channels
        for _, op in self.layers():
            channels = op.cout
        return channels

    # ---- string and JSON forms -------------------------------------------------
    def to_sections(self) -> dict[str, Any]:
        return {
            "input": f"{self.in_channels}x{self.input_size}",
            "stem": encode_ops(list(self.stem)),
            "stages": [encode_ops(list(stage)) for stage in self.stages],
            "head": encode_ops(list(self.head)),
            "classes": self.num_classes,
        }

    def encode(self) -> str:
        s = self.to_sections()
        return " ".join([
            f"input={s['input']}",
            f"stem={','.join(s['stem'])}",
            f"stages={'|'.join(','.join(stage) for stage in s['stages'])}",
            f"head={','.join(s['head'])}",
            f"classes={s['classes']}",
        ])

    def __str__(self) -> str:
        return self.encode()

    @classmethod
    def parse(cls, text: str) -> Arch:
        """Inverse of :meth:`encode`; errors name the section or token at fault."""
        fields: dict[str, str] = {}
        for part in text.split():
            key, sep, value = part.partition("=")
            if not sep or key not in _SECTIONS:
                raise SpecError(f"bad section {cut(repr(part))}; an arch string has "
                                f"{', '.join(k + '=' for k in _SECTIONS)}")
            if key in fields:
                raise SpecError(f"section {key}= appears twice")
            fields[key] = value
        missing = [k for k in ("input", "stages", "classes") if k not in fields]
        if missing:
            raise SpecError(f"arch string lacks {', '.join(k + '=' for k in missing)}")
        split = lambda value, sep: [v for v in value.split(sep) if v]  # noqa: E731
        stages = fields["stages"].split("|") if fields["stages"] else []
        for i, stage in enumerate(stages):
            if not split(stage, ","):
                raise SpecError(f"stage {i} of stages= is empty; every stage needs at least one block")
        return cls.from_sections({
            "input": fields["input"],
            "stem": split(fields.get("stem", ""), ","),
            "stages": [split(stage, ",") for stage in stages],
            "head": split(fields.get("head", ""), ","),
            "classes": fields["classes"],
        })

    @classmethod
    def from_sections(cls, sections: dict[str, Any]) -> Arch:
        in_channels, size = _parse_input(str(sections["input"]))
        if in_channels < 1 or size < 1:
            raise SpecError(f"input={cut(repr(sections['input']))}: channels and size must be positive")
        try:
            classes = int(sections["classes"])
        except (TypeError, ValueError):
            raise SpecError(f"classes={cut(repr(sections['classes']))} must be a positive integer") from None
        stem, channels = _decode_list(_strings("stem", sections.get("stem", [])), in_channels)
        if not isinstance(sections["stages"], (list, tuple)):
            raise SpecError(f"stages={cut(repr(sections['stages']))} must be a list of stages, each a list of op "
                            "strings")
        stages = []
        for i, stage_strings in enumerate(sections["stages"]):
            stage, channels = _decode_list(_strings(f"stage {i}", stage_strings), channels)
            stages.append(tuple(stage))
        head, channels = _decode_list(_strings("head", sections.get("head", [])), channels)
        for where, ops in (("stem", stem), ("head", head)):
            if any(not isinstance(op, ConvOp) for op in ops):
                raise SpecError(f"{where} may hold only cn_ convs")
        return cls(input_size=size, in_channels=in_channels, num_classes=classes,
                   stem=tuple(stem), stages=tuple(stages), head=tuple(head))

    def to_dict(self) -> dict[str, Any]:
        return {"format": "autospace-arch-string/1", **self.to_sections()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Arch:
        if data.get("format") != "autospace-arch-string/1":
            raise SpecError(f"format={cut(repr(data.get('format')))}; expected 'autospace-arch-string/1'")
        missing = [k for k in ("input", "stages", "classes") if k not in data]
        if missing:
            raise SpecError(f"arch JSON lacks keys {', '.join(missing)}")
        return cls.from_sections(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Arch:
        return cls.from_dict(json.loads(text))


def _parse_input(value: str) -> tuple[int, int]:
    channels, sep, size = value.partition("x")
    if not sep or not channels.isdigit() or not size.isdigit():
        raise SpecError(f"input={cut(repr(value))} must be CHANNELSxSIZE, e.g. input=1x28")
    return int(channels), int(size)


def _strings(where: str, value: Any) -> list[str]:
    """A section of the JSON form: a list of op strings (a bare string would be read letter by letter)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{where}={cut(repr(value))} must be a list of op strings")
    return list(value)


def _decode_list(strings: list[str], channels: int) -> tuple[list[Op], int]:
    ops: list[Op] = []
    for text in strings:
        decoded = decode_ops(text, channels)
        ops.extend(decoded)
        channels = decoded[-1].cout
    return ops, channels
