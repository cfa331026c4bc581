"""Plain-text tables for terminal reports (cost tables, run summaries), and short arch ids for them.

An arch string is 150-250 characters; a table with one per row does not fit a
terminal. Tables show :func:`arch_id` instead (a stable 8-hex digest, the same
in every command, report and run), the full strings are in the JSON files and
with ``--wide``.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

__all__ = ["TABLE_WIDTH", "arch_id", "arch_label", "format_table", "human"]

TABLE_WIDTH = 100  # what every default table fits


def human(value: float | int | None, unit: str = "") -> str:
    """``3504872`` -> ``3.50M``: short, fixed-precision numbers for people."""
    if value is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}{unit}"
    return f"{value:g}{unit}"


def arch_id(arch: str) -> str:
    """The first 8 hex digits of the arch string's SHA-256: stable across runs, machines and Python versions."""
    return hashlib.sha256(" ".join(arch.split()).encode()).hexdigest()[:8]


def arch_label(arch: str | None, wide: bool = False) -> str:
    """What a table shows for an architecture: its id, or with ``wide`` the whole string."""
    if not arch:
        return "-"
    return arch if wide else arch_id(arch)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned first column, right-aligned others, one space-padded line per row."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(cells[0]), line(["-" * w for w in widths]), *(line(r) for r in cells[1:])])
