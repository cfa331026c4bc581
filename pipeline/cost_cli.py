"""The ``autospace cost`` command: exact MAdds and parameters of architectures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pipeline.tables import format_table, human
from spaces.arch import Arch
from spaces.cost import arch_cost, layer_costs
from spaces.errors import cut
from spaces.interchange import NamedArch, load_interchange
from spaces.ops import SpecError

__all__ = ["register", "read_archs"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cost", help="exact MAdds and params of architectures",
        description="ARCH is a file in the interchange format autospace-arch/1 (one model or a models list), "
                    "a project arch JSON (autospace-arch-string/1), a text file holding an arch string, "
                    "or an arch string itself.")
    parser.add_argument("arch", help="architecture file or string")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--layers", action="store_true", help="also print the per-layer table")
    parser.set_defaults(func=run_cost)


# The published models file is 46 kB; a bound keeps a stray 50 MB file from costing minutes and gigabytes.
MAX_FILE_BYTES = 1_000_000


def read_archs(source: str) -> list[NamedArch]:
    """Architectures from any of the accepted forms; SpecError names what is wrong."""
    path = Path(source)
    if len(source) > 4096 or not path.is_file():  # longer than any path; is_file() would raise
        if "stages=" in source:
            return [NamedArch("arch", Arch.parse(source))]
        raise SpecError(f"{cut(repr(source))} is neither a file nor an arch string (arch strings contain 'stages=')")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise SpecError(f"{path} is {path.stat().st_size:,} bytes; an architecture file is at most "
                        f"{MAX_FILE_BYTES:,} (is it the right file?)")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise SpecError(f"{path} is not a text file; give an arch string, a .txt holding one, or an arch JSON") \
            from None
    if path.suffix != ".json" and not text.lstrip().startswith(("{", "[")):
        return [NamedArch(path.stem, Arch.parse(text.strip()))]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path} holds a JSON {type(data).__name__}; an architecture file is a mapping "
                        "(autospace-arch/1 or autospace-arch-string/1)")
    try:
        if data.get("format") == "autospace-arch-string/1":
            return [NamedArch(path.stem, Arch.from_dict(data))]
        return load_interchange(data)
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None


def _deviation(computed: int, published: Any) -> str:
    return f"{100 * (computed - published) / published:+.2f}%" if published else "-"


def cost_report(archs: list[NamedArch]) -> list[dict[str, Any]]:
    """One JSON-friendly record per arch, with reference/published figures where known."""
    records = []
    for named in archs:
        cost = arch_cost(named.arch)
        record: dict[str, Any] = {"name": named.name, "arch": named.arch.encode(), **cost.to_dict()}
        if named.reference_count:
            record["reference_count"] = named.reference_count
            record["matches_reference"] = named.reference_count == cost.to_dict()
        if named.published:
            record["published"] = {k: named.published.get(k) for k in ("madds", "params", "source")}
        records.append(record)
    return records


def format_cost_report(records: list[dict[str, Any]]) -> str:
    rows = []
    for r in records:
        published = r.get("published", {})
        reference = r.get("reference_count")
        rows.append([
            r["name"], f"{r['madds']:,}", f"{r['params']:,}",
            "-" if reference is None else ("exact" if r["matches_reference"] else "DIFFERS"),
            human(published.get("madds")), _deviation(r["madds"], published.get("madds")),
            human(published.get("params")), _deviation(r["params"], published.get("params")),
        ])
    return format_table(["model", "MAdds", "params", "reference", "pub. MAdds", "Δ", "pub. params", "Δ"], rows)


def run_cost(args: argparse.Namespace) -> int:
    archs = read_archs(args.arch)
    records = cost_report(archs)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    print(format_cost_report(records))
    if args.layers:
        for named in archs:
            print(f"\n{named.name}")
            print(format_table(["layer", "op", "in", "MAdds", "params"],
                               [[r.where, r.op, r.input_size, f"{r.cost.madds:,}", f"{r.cost.params:,}"]
                                for r in layer_costs(named.arch)]))
    return 0
