"""``autospace run`` and ``autospace search``: the main job and one supernet search."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from pipeline.config import Config, load_config
from pipeline.cost_cli import cost_report, format_cost_report
from pipeline.data.cli import format_summary
from pipeline.search_job import dataset_info, load_search_data, load_space, search_settings
from pipeline.tables import format_table, human
from spaces.interchange import NamedArch, reference_models
from spaces.reference import reference_arch
from spaces.search import SearchResult, search

__all__ = ["register", "config_from_args", "run_search"]


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config; omit for the embedded defaults")
    parser.add_argument("--out", type=Path, default=None, help="run directory (overrides out_dir)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set search.epochs=2 (repeatable)")


def register(subparsers: argparse._SubParsersAction) -> None:
    run_parser = subparsers.add_parser("run", help="run the pipeline on a config")
    _add_config_arguments(run_parser)
    run_parser.set_defaults(func=run)
    search_parser = subparsers.add_parser(
        "search", help="one differentiable supernet search in this process",
        description="Search the configured space (or --space) once; resumes from OUT/search/checkpoint.pt.")
    _add_config_arguments(search_parser)
    search_parser.add_argument("--space", type=Path, default=None, help="search-space YAML/JSON (overrides space.file)")
    search_parser.set_defaults(func=run_search_command)


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file with ``--set``, ``--out`` (and ``--space``) applied, validated."""
    overrides = list(args.overrides) + ([f"out_dir={args.out}"] if args.out else [])
    if getattr(args, "space", None):
        overrides.append(f"space.file={args.space}")
    return load_config(args.config, overrides)


def run_search(config: Config, show_progress: bool = True) -> SearchResult:
    """Search the configured space on the configured data; checkpoint and result under out_dir/search."""
    path, info = dataset_info(config)
    space = load_space(config, info)
    settings = search_settings(config)
    data = load_search_data(config, path)
    out = config.out_dir / "search"
    out.mkdir(parents=True, exist_ok=True)
    space.save(out / "space.yaml")
    bar = tqdm(total=settings.epochs, desc="search", unit="epoch", disable=not show_progress)

    def on_epoch(record: dict) -> None:
        bar.n = record["epoch"] + 1
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", madds=human(record["expected_madds"]), tau=f"{record['tau']:.2f}")
        bar.refresh()

    try:
        result = search(space, data, settings, checkpoint=out / "checkpoint.pt", on_epoch=on_epoch)
    finally:
        bar.close()
    (out / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


def run_search_command(args: argparse.Namespace) -> int:
    result = run_search(config_from_args(args))
    print(format_table(["derived architecture", "MAdds", "params", "val acc", "seconds"],
                       [[result.arch.encode(), human(result.cost.madds), human(result.cost.params),
                         f"{result.val_accuracy:.4f}", f"{result.wall_seconds:.0f}"]]))
    return 0


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    _, info = dataset_info(config)
    print(format_summary(info))
    channels, size, _ = info.shape
    reference = NamedArch("reference (this data set)", reference_arch(channels, size, info.num_classes))
    print()
    print(format_cost_report(cost_report([reference, *reference_models()])))
    return 0
