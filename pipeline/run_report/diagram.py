"""An architecture as a block diagram (inline SVG): one row per stage, one box per block.

Each box says what the arch string encodes (``ir_k5_s2_e6_c48_se0.25_swish``:
MBConv, kernel 5, stride 2, expansion 6, 48 output channels, squeeze-excite,
swish) and each row the stage's resolution in and out; the box colour is the
block type. Drawn by hand rather than by matplotlib so every block is an element
the page (and its test) can address.
"""

from __future__ import annotations

from html import escape

from spaces.arch import Arch
from spaces.cost import out_size
from spaces.ops import ConvOp, MBConvOp, Op, SkipOp

__all__ = ["arch_svg"]

_BOX_W, _BOX_H, _GAP, _LABEL_W, _ROW_H = 112, 50, 10, 150, 66
_COLOURS = {"MBConv": "#cfe0f5", "DS": "#d5efd0", "conv": "#e6e6e6", "skip": "#ffffff"}


def _describe(op: Op) -> tuple[str, list[str]]:
    """(block type, the box's text lines) for one op."""
    if isinstance(op, SkipOp):
        return "skip", ["skip", f"c{op.cout}"]
    if isinstance(op, ConvOp):
        extra = " pool" if op.after_pool else ""
        return "conv", [f"conv k{op.k}{extra}", f"s{op.s} · c{op.cout}", op.act]
    assert isinstance(op, MBConvOp)
    kind = "MBConv" if op.has_pw else "DS"
    title = f"MBConv e{op.expansion:g}" if op.has_pw else "DS conv"
    tail = ("SE · " if op.se is not None else "") + op.act + (" · res" if op.residual else "")
    return kind, [title, f"k{op.k} s{op.s} · c{op.cout}", tail]


def _box(x: float, y: float, op: Op) -> str:
    kind, lines = _describe(op)
    dash = ' stroke-dasharray="4 3"' if kind == "skip" else ""
    text = "".join(f'<text x="{x + _BOX_W / 2}" y="{y + 15 + 14 * i}" text-anchor="middle">{escape(line)}</text>'
                   for i, line in enumerate(lines))
    return (f'<g class="block" data-kind="{kind}"><rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="5" '
            f'fill="{_COLOURS[kind]}" stroke="#555"{dash}/>{text}</g>')


def arch_svg(arch: Arch) -> str:
    """The diagram of ``arch``: input, stem, each stage (resolution in -> out), head and classifier."""
    rows: list[tuple[str, str, list[Op]]] = []  # (row label, resolution note, ops)
    size = arch.input_size
    start = size
    for op in arch.stem:
        size = out_size(size, op.s)
    rows.append(("stem", f"{arch.in_channels}x{start}px → {size}px", list(arch.stem)))
    for s, stage in enumerate(arch.stages):
        start = size
        for op in stage:
            size = out_size(size, getattr(op, "s", 1))
        rows.append((f"stage {s}", f"{start}px → {size}px", list(stage)))
    rows.append(("head", f"{size}px, pool → {arch.num_classes} classes", list(arch.head)))
    width = _LABEL_W + max(len(ops) for _, _, ops in rows) * (_BOX_W + _GAP) + 10
    parts = []
    for r, (label, note, ops) in enumerate(rows):
        y = 8 + r * _ROW_H
        parts.append(f'<g class="stage" data-name="{escape(label)}"><text x="4" y="{y + 20}" font-weight="bold">'
                     f'{escape(label)}</text><text x="4" y="{y + 36}" class="note">{escape(note)}</text>')
        parts += [_box(_LABEL_W + i * (_BOX_W + _GAP), y, op) for i, op in enumerate(ops)]
        if not ops:
            parts.append(f'<text x="{_LABEL_W}" y="{y + 28}" class="note">(none)</text>')
        parts.append("</g>")
    height = 16 + len(rows) * _ROW_H
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="architecture diagram" '
            f'class="diagram" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'font-family="sans-serif" font-size="11">{"".join(parts)}</svg>')
