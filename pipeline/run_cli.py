"""``autospace run`` and ``autospace search``: the main job and one supernet search."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import Config, load_config
from pipeline.data.cli import format_summary
from pipeline.latency_table import measure_spaces, table_file
from pipeline.progress import Progress
from pipeline.run_dir import check_out_dir, read_run_config, read_status, set_ray_address
from pipeline.run_tables import fmt, format_run_summary, format_status
from pipeline.search_job import dataset_info, load_search_data, load_space, search_settings
from pipeline.tables import arch_label, format_table, human
from spaces.search import SearchResult, search

__all__ = ["add_config_arguments", "register", "config_from_args", "run_search"]


def add_config_arguments(parser: argparse.ArgumentParser, out_help: str = "run directory (overrides out_dir)",
                         config_help: str = "YAML config; omit for the embedded defaults") -> None:
    """``--config``, ``--out`` and ``--set``, read by :func:`config_from_args`."""
    parser.add_argument("--config", type=Path, default=None, help=config_help)
    parser.add_argument("--out", type=Path, default=None, help=out_help)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set search.epochs=2 (repeatable)")


def _add_wide(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wide", action="store_true",
                        help="full arch strings in the tables instead of their 8-hex ids")


def register(subparsers: argparse._SubParsersAction) -> None:
    run_parser = subparsers.add_parser("run", help="evolve search spaces on Ray (the main job)")
    add_config_arguments(run_parser)
    _add_wide(run_parser)
    run_parser.set_defaults(func=run)
    resume_parser = subparsers.add_parser("resume", help="continue an interrupted run where it stopped")
    resume_parser.add_argument("out", type=Path, help="the run directory")
    resume_parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                               help="resume on another Ray cluster (HOST:PORT, ray://HOST:PORT, auto, or local for a "
                                    "Ray of its own), e.g. one restarted at a new address; saved in the run's config")
    _add_wide(resume_parser)
    resume_parser.set_defaults(func=resume)
    status_parser = subparsers.add_parser("status", help="progress of a run: generations done, best so far")
    status_parser.add_argument("out", type=Path, help="the run directory")
    status_parser.add_argument("--json", action="store_true", help="print JSON")
    _add_wide(status_parser)
    status_parser.set_defaults(func=status)
    schedule_parser = subparsers.add_parser(
        "schedule", help="run the whole pipeline on a cron schedule (foreground), never overlapping",
        description="Each run: evolve -> retrain -> export -> register -> promote if better, in "
                    "OUT/scheduled/<UTC stamp>; an interrupted run is resumed by the next tick. See docs/schedule.md.")
    add_config_arguments(schedule_parser)
    when = schedule_parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='cron expression in UTC, e.g. "0 3 * * *", "0 */6 * * mon-fri" or @daily')
    when.add_argument("--once", action="store_true", help="one scheduled run now (for cron/systemd/K8s)")
    schedule_parser.add_argument("--max-runs", type=int, default=None, help="stop after this many runs")
    schedule_parser.set_defaults(func=schedule)
    report_parser = subparsers.add_parser(
        "report", help="write the run's self-contained report.html (plots, heat maps, diagram)",
        description="Reads the run directory (a finished run or one in progress) and writes one HTML file with "
                    "inline SVG: reward per generation, cell fitness per layer over the generations, accuracy vs "
                    "cost, the best architecture as a diagram, predicted vs measured latency, registry decisions.")
    report_parser.add_argument("out", type=Path, help="the run directory")
    report_parser.add_argument("--output", type=Path, default=None, help="where to write (default OUT/report.html)")
    report_parser.set_defaults(func=report)
    search_parser = subparsers.add_parser(
        "search", help="one differentiable supernet search in this process",
        description="Search the configured space (or --space) once; resumes from OUT/search/checkpoint.pt.")
    add_config_arguments(search_parser)
    search_parser.add_argument("--space", type=Path, default=None, help="search-space YAML/JSON (overrides space.file)")
    _add_wide(search_parser)
    search_parser.set_defaults(func=run_search_command)


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file with ``--set``, ``--out`` (and ``--space``) applied, validated."""
    config = load_config(args.config, list(args.overrides))
    # Paths from the command line are taken as given, not parsed as YAML like --set values.
    if getattr(args, "space", None):
        config = config.model_copy(update={"space": config.space.model_copy(update={"file": args.space})})
    if args.out:
        config = config.model_copy(update={"out_dir": args.out})
    check_out_dir(config.out_dir)
    return config


def run_search(config: Config, show_progress: bool = True) -> SearchResult:
    """Search the configured space on the configured data; checkpoint and result under out_dir/search."""
    path, info = dataset_info(config)
    space = load_space(config, info)
    settings = search_settings(config)
    data = load_search_data(config, path)
    out = config.out_dir / "search"
    out.mkdir(parents=True, exist_ok=True)
    space.save(out / "space.yaml")
    table = None
    if settings.budget_metric == "latency":
        table_path = table_file(out, config)  # measured here, before the search, never inside it
        table, added = measure_spaces(table_path, config, [space])
        if show_progress:
            print(f"latency table {table_path}: {added} entries measured on {config.budget.latency_runtime}")
    bar: Progress | None = None  # appears with the first epoch, so a refused checkpoint's error prints alone

    def on_epoch(record: dict) -> None:
        nonlocal bar
        if bar is None:
            bar = Progress(settings.epochs, "search", "epoch", enabled=show_progress)
        latency = record["expected_latency_ms"]
        bar.update(record["epoch"] + 1, loss=f"{record['train_loss']:.3f}", madds=human(record["expected_madds"]),
                   **({"ms": f"{latency:.3f}"} if latency is not None else {}), tau=f"{record['tau']:.2f}")

    try:
        result = search(space, data, settings, checkpoint=out / "checkpoint.pt", on_epoch=on_epoch,
                        latency_table=table)
    finally:
        if bar is not None:
            bar.close()
    (out / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


def run_search_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    result = run_search(config)
    print(format_table(["derived arch", "MAdds", "params", "predicted ms", "val acc", "seconds"],
                       [[arch_label(result.arch.encode(), args.wide), human(result.cost.madds),
                         human(result.cost.params), fmt(result.predicted_latency_ms), f"{result.val_accuracy:.4f}",
                         f"{result.wall_seconds:.0f}"]]))
    print(f"result (full arch string): {config.out_dir / 'search' / 'result.json'}")
    return 0


def _follow(config: Config, resume_run: bool) -> dict:
    """Run the pipeline with generation progress; returns the summary.

    The progress appears with the first status, so input errors found before the run
    starts print alone.
    """
    bar: Progress | None = None

    def on_status(status: dict) -> None:
        nonlocal bar
        if bar is None:
            bar = Progress(config.evolution.generations, "generations", "gen")
        live = status["status"]
        bar.update(status["generations_done"], phase=live.get("phase", "starting"),
                   trials=live.get("running_trials", 0),
                   best=f"{status['best_reward']:.4f}" if status["best_reward"] is not None else "-")

    # Ray and MLflow load only for commands that use them
    from deploy.stage import deploy_run
    from pipeline.evolution_run import run_pipeline

    try:
        return run_pipeline(config, deploy_run, resume=resume_run, on_status=on_status,
                            on_cluster=lambda line: print(line, flush=True))
    finally:
        if bar is not None:
            bar.close()


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    _, info = dataset_info(config)
    print(format_summary(info))
    print()
    summary = _follow(config, resume_run=False)
    print(format_run_summary(summary, config.out_dir, args.wide))
    return 0


def resume(args: argparse.Namespace) -> int:
    if args.ray_address is not None:
        from pipeline.cluster import LOCAL, check_reachable

        check_reachable(args.ray_address)  # a wrong address fails here and leaves the run's config as it was
        address = None if args.ray_address == LOCAL else args.ray_address
        old = set_ray_address(args.out, address)
        print(f"ray.address: {old or LOCAL} -> {address or LOCAL} (saved in {args.out / 'config.yaml'})")
    config = read_run_config(args.out)  # the run's own config: its generations size the progress
    summary = _follow(config, resume_run=True)
    print(format_run_summary(summary, args.out, args.wide))
    return 0


def schedule(args: argparse.Namespace) -> int:
    from deploy.schedule import CronSchedule, run_forever, run_tick

    from pipeline.evolution_run import check_new_run

    config = config_from_args(args)
    cron = CronSchedule.parse(args.cron) if args.cron else None
    check_new_run(config)  # bad input fails now, not at the first tick after the lock and records are written

    def job(run_dir: Path, resume_run: bool) -> dict:
        summary = _follow(config.model_copy(update={"out_dir": run_dir}), resume_run)
        models = (summary.get("deploy") or {}).get("models", [])
        return {"best": summary["best"]["arch"], "versions": [m.get("version") for m in models],
                "promotions": [m.get("promotion", {}).get("decision") for m in models]}

    if cron is None:
        print(json.dumps(run_tick(config.out_dir, job), indent=2))
        return 0
    for record in run_forever(config.out_dir, cron, job, max_runs=args.max_runs,
                              on_wait=lambda due: print(f"next run at {due.isoformat()}", flush=True)):
        print(json.dumps(record, indent=2))
    return 0


def status(args: argparse.Namespace) -> int:
    config = read_run_config(args.out)
    info = read_status(args.out)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(format_status(args.out, info, config.evolution.generations, args.wide, config.wall_time_minutes))
    return 0


def report(args: argparse.Namespace) -> int:
    from pipeline.run_report import write_report  # matplotlib loads only for this command

    print(f"report: {write_report(args.out, args.output)}")
    return 0
