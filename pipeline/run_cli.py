"""The ``autospace run`` command: the main job on a config (embedded defaults if none)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import Config, load_config
from pipeline.cost_cli import cost_report, format_cost_report
from pipeline.data import default_dataset, read_info
from pipeline.data.cli import format_summary
from spaces.interchange import NamedArch, reference_models
from spaces.reference import reference_arch

__all__ = ["register", "resolve_dataset"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the pipeline on a config")
    parser.add_argument("--config", type=Path, default=None, help="YAML config; omit for the embedded defaults")
    parser.add_argument("--out", type=Path, default=None, help="run directory (overrides out_dir)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set search.epochs=2 (repeatable)")
    parser.set_defaults(func=run)


def resolve_dataset(config: Config) -> Path:
    """The configured data file, or the embedded default imported once into the cache."""
    if config.data.path is not None:
        return config.data.path
    return default_dataset(config.data.cache_dir.expanduser())


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"out_dir={args.out}"] if args.out else [])
    config = load_config(args.config, overrides)
    info = read_info(resolve_dataset(config))
    print(format_summary(info))
    channels, size, _ = info.shape
    reference = NamedArch("reference (this data set)", reference_arch(channels, size, info.num_classes))
    print()
    print(format_cost_report(cost_report([reference, *reference_models()])))
    return 0
