"""The ``autospace data`` command: import data sets and inspect data files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.data.importers import FORMATS, import_dataset
from pipeline.data.info import DatasetInfo, read_info

__all__ = ["format_summary", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data import`` and ``data info`` to the main CLI; handlers raise DataError on bad input."""
    data = subparsers.add_parser("data", help="import data sets into Parquet and inspect them")
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    importer = commands.add_parser(
        "import",
        help="convert a data set to an AutoSpace Parquet file",
        description="Convert a data set to one Parquet file; a validation split is carved from train.",
    )
    importer.add_argument("format", choices=sorted(FORMATS), help="source format")
    importer.add_argument("src", type=Path, help="source directory (or .npz file)")
    importer.add_argument("out", type=Path, help="Parquet file to write")
    importer.add_argument("--val-fraction", type=float, default=0.1, help="share of train per class moved to val")
    importer.add_argument("--seed", type=int, default=0, help="seed choosing the val rows")
    importer.set_defaults(func=run_import)

    info = commands.add_parser("info", help="show the metadata of a data file")
    info.add_argument("path", type=Path, help="Parquet data file")
    info.add_argument("--json", action="store_true", help="print the metadata as JSON")
    info.set_defaults(func=run_info)


def run_import(args: argparse.Namespace) -> int:
    info = import_dataset(args.format, args.src, args.out, val_fraction=args.val_fraction, seed=args.seed)
    print(format_summary(info))
    return 0


def run_info(args: argparse.Namespace) -> int:
    info = read_info(args.path)
    print(json.dumps(info.to_dict(), indent=2) if args.json else format_summary(info))
    return 0


def format_summary(info: DatasetInfo) -> str:
    """A few aligned lines describing a data file, for people."""
    channels, height, width = info.shape
    rows = {
        "path": str(info.path),
        "source": info.source,
        "classes": f"{info.num_classes}: {', '.join(info.classes)}",
        "shape": f"{channels}x{height}x{width} (C x H x W)",
        "splits": ", ".join(f"{name} {info.counts[name]}" for name in info.splits),
        "mean": " ".join(f"{value:.4f}" for value in info.mean),
        "std": " ".join(f"{value:.4f}" for value in info.std),
    }
    return "\n".join(f"{key:<8}{value}" for key, value in rows.items())
