"""``autospace run`` and ``autospace search``: the main job and one supernet search."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from pipeline.config import Config, load_config
from pipeline.data.cli import format_summary
from pipeline.latency_table import measure_spaces, table_file
from pipeline.run_dir import check_out_dir, read_run_config, read_status
from pipeline.search_job import dataset_info, load_search_data, load_space, search_settings
from pipeline.tables import format_table, human
from spaces.search import SearchResult, search

__all__ = ["register", "config_from_args", "run_search"]


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config; omit for the embedded defaults")
    parser.add_argument("--out", type=Path, default=None, help="run directory (overrides out_dir)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set search.epochs=2 (repeatable)")


def register(subparsers: argparse._SubParsersAction) -> None:
    run_parser = subparsers.add_parser("run", help="evolve search spaces on Ray (the main job)")
    _add_config_arguments(run_parser)
    run_parser.set_defaults(func=run)
    resume_parser = subparsers.add_parser("resume", help="continue an interrupted run where it stopped")
    resume_parser.add_argument("out", type=Path, help="the run directory")
    resume_parser.set_defaults(func=resume)
    status_parser = subparsers.add_parser("status", help="progress of a run: generations done, best so far")
    status_parser.add_argument("out", type=Path, help="the run directory")
    status_parser.add_argument("--json", action="store_true", help="print JSON")
    status_parser.set_defaults(func=status)
    schedule_parser = subparsers.add_parser(
        "schedule", help="run the whole pipeline on a cron schedule (foreground), never overlapping",
        description="Each run: evolve -> retrain -> export -> register -> promote if better, in "
                    "OUT/scheduled/<UTC stamp>; an interrupted run is resumed by the next tick. See docs/schedule.md.")
    _add_config_arguments(schedule_parser)
    when = schedule_parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='five-field cron expression in UTC, e.g. "0 3 * * *"')
    when.add_argument("--once", action="store_true", help="one scheduled run now (for cron/systemd/K8s)")
    schedule_parser.add_argument("--max-runs", type=int, default=None, help="stop after this many runs")
    schedule_parser.set_defaults(func=schedule)
    search_parser = subparsers.add_parser(
        "search", help="one differentiable supernet search in this process",
        description="Search the configured space (or --space) once; resumes from OUT/search/checkpoint.pt.")
    _add_config_arguments(search_parser)
    search_parser.add_argument("--space", type=Path, default=None, help="search-space YAML/JSON (overrides space.file)")
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
    bar: tqdm | None = None  # appears with the first epoch, so a refused checkpoint's error prints alone

    def on_epoch(record: dict) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=settings.epochs, desc="search", unit="epoch", disable=not show_progress)
        bar.n = record["epoch"] + 1
        latency = record["expected_latency_ms"]
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", madds=human(record["expected_madds"]),
                        **({"ms": f"{latency:.3f}"} if latency is not None else {}), tau=f"{record['tau']:.2f}")
        bar.refresh()

    try:
        result = search(space, data, settings, checkpoint=out / "checkpoint.pt", on_epoch=on_epoch,
                        latency_table=table)
    finally:
        if bar is not None:
            bar.close()
    (out / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


def run_search_command(args: argparse.Namespace) -> int:
    result = run_search(config_from_args(args))
    print(format_table(["derived architecture", "MAdds", "params", "predicted ms", "val acc", "seconds"],
                       [[result.arch.encode(), human(result.cost.madds), human(result.cost.params),
                         _fmt(result.predicted_latency_ms), f"{result.val_accuracy:.4f}",
                         f"{result.wall_seconds:.0f}"]]))
    return 0


def _follow(config: Config, resume_run: bool) -> dict:
    """Run the pipeline with a generation progress bar; returns the summary.

    The bar appears with the first status, so input errors found before the run starts
    print alone.
    """
    bar: tqdm | None = None

    def on_status(status: dict) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=config.evolution.generations, desc="generations", unit="gen")
        bar.n = status["generations_done"]
        live = status["status"]
        bar.set_postfix(phase=live.get("phase", "starting"), trials=live.get("running_trials", 0),
                        best=f"{status['best_fitness']:.4f}" if status["best_fitness"] is not None else "-")
        bar.refresh()

    # Ray and MLflow load only for commands that use them
    from deploy.stage import deploy_run
    from pipeline.evolution_run import run_pipeline

    try:
        return run_pipeline(config, deploy_run, resume=resume_run, on_status=on_status, on_cluster=tqdm.write)
    finally:
        if bar is not None:
            bar.close()


def _print_summary(summary: dict, out_dir: Path) -> None:
    best = summary["best"]
    print(summary_table_of(summary))
    print()
    print(format_table(["Pareto front (val acc vs cost)", "MAdds", "params", "predicted ms", "val acc"],
                       [[p["arch"], human(p["madds"]), human(p["params"]), _fmt(p.get("predicted_latency_ms")),
                         f"{p['val_accuracy']:.4f}"] for p in summary["pareto_front"]]))
    print(f"\nbest: {best['arch']}\n      val acc {best['val_accuracy']:.4f}, {human(best['madds'])} MAdds, "
          f"{human(best['params'])} params, fitness {best['fitness']:.4f} ({best['from']})")
    models = (summary.get("deploy") or {}).get("models", [])
    if models:
        print()
        print(format_table(["retrained model", "test acc", "torch ms (b=1)", "predicted", "ONNX ms (b=1)", "version",
                            "promotion"],
                           [[m["arch"], f"{m['retrain']['test_accuracy']:.4f}",
                             _fmt(m["export"]["latency_ms"].get("torch", {}).get("1")),
                             _fmt(m.get("predicted_latency_ms")),
                             _fmt(m["export"]["latency_ms"].get("onnxruntime", {}).get("1")), m["version"],
                             m["promotion"]["decision"]] for m in models]))
    print(f"summary: {out_dir / 'summary.json'}  plot: {out_dir / 'pareto.png'}  "
          f"mlflow: {summary['mlflow']['tracking_uri']} run {summary['mlflow']['run_id']}")


def summary_table_of(summary: dict) -> str:
    return format_table(["generation", "best fitness", "mean fitness", "best arch"],
                        [[g["generation"], _fmt(g["best_fitness"]), _fmt(g["mean_fitness"]), g["champion"] or "-"]
                         for g in summary["generations"]])


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    _, info = dataset_info(config)
    print(format_summary(info))
    print()
    summary = _follow(config, resume_run=False)
    _print_summary(summary, config.out_dir)
    return 0


def resume(args: argparse.Namespace) -> int:
    config = read_run_config(args.out)  # the run's own config: its generations size the progress bar
    summary = _follow(config, resume_run=True)
    _print_summary(summary, args.out)
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
    live = info["status"]
    running = info["running"] is not False
    print(format_table(["run", "phase", "generations done", "trials running", "best fitness", "best arch"],
                       [[str(args.out), _phase(info),
                         f"{info['generations_done']}/{live.get('generations', config.evolution.generations)}",
                         live.get("running_trials", 0) if running else 0, _fmt(info["best_fitness"]),
                         info["best_arch"] or "-"]]))
    if live.get("phase") == "failed":
        print(f"failed: {live.get('error', 'no error recorded')}")
    return 0


def _phase(info: dict) -> str:
    """The phase, or that the run is not running (its driver is gone) and when it was last seen."""
    live = info["status"]
    if info["finished"]:
        return "finished"
    phase = live.get("phase", "not started")
    if info["running"] is False and phase != "failed":
        seen = datetime.fromtimestamp(info["last_seen"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"not running (last seen {seen}, {phase})"
    return phase
