"""Orchestration overhead and data-parallel scaling of one candidate-space search.

Measured side by side in one run, on the same space, data and settings:

1. the search called directly in this process (1 torch thread);
2. the same search through Ray Tune with 1 worker of 1 CPU — the path every candidate
   space takes in ``autospace run`` by default: the Tune trial searches in its own
   process — wall time of the whole ``evaluate_spaces`` call, and the search time
   measured inside the trial;
3. the same through a Ray Train worker group of 2 workers in the trial (data-parallel,
   1 CPU each);
4. with ``--spaces N`` (and ``--generations G``): G calls ("generations") of N copies
   of the space each through one slot that lives across the calls (one Tune trial
   that searches them one after another, as ``autospace run``
   does for its generations and final search), against G x N direct searches run
   in this process before each call (interleaved, so both sides see the same
   machine): the fixed start is paid once per slot and run, not once per space.

Prints the overhead of (2) over (1) and its fixed part (everything around the
search itself: Tune's trial, with 2 workers the Train controller and worker-group
start and gloo set-up, data loading in the trial or worker), and the samples/s
of (3) over (2) in the search's training epochs (derivation, cell evidence and the derived child's
fine-tuning run in full on every rank, so the whole call does not split), for
each search batch size asked for (the all-reduce costs the same per step whatever
the batch, so 2 workers pay off from some batch size on); ``--repeats R`` runs the 1-
and 2-worker rows R times, interleaved, and gives that ratio's mean ± s.e. over the
rounds (one run's ratio moves by tens of percent on a shared 2-core machine).
``--nodes 2`` runs the Ray rows on a real 2-node cluster on this machine (``ray start`` head + worker, 1 CPU
each, as ``tests/ray_nodes.py`` starts it): the trial and its workers then
spread over nodes. Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_orchestration.py --train 3000 --epochs 3
    PYTHONPATH=. .venv/bin/python benchmarks/bench_orchestration.py --train 2000 --epochs 3 --spaces 2 --generations 3
    PYTHONPATH=. .venv/bin/python benchmarks/bench_orchestration.py --space spaces/data/default_space.yaml \
        --batch 64 256 --nodes 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch

from pipeline.cluster import ensure_ray
from pipeline.config import load_config
from pipeline.ray_eval import SearchSlots, evaluate_spaces, searches_in_trial
from pipeline.search_job import dataset_info, load_search_data, load_space, search_settings
from pipeline.tables import format_table
from spaces.search import SearchData, SearchResult, SearchSettings, search
from spaces.space import SearchSpace
from tests.ray_nodes import LocalRayCluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path(__file__).parents[1] / "configs" / "quickstart.yaml")
    parser.add_argument("--space", type=Path, help="a space file instead of the config's")
    parser.add_argument("--train", type=int, default=3000, help="training images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, nargs="+", help="search batch sizes (default: the config's)")
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=1, help="Ray nodes of 1 CPU each (2: ray start)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the 1- and 2-worker rows (mean ± s.e.)")
    parser.add_argument("--spaces", type=int, default=1, help="also search N spaces per call through one slot")
    parser.add_argument("--generations", type=int, default=1, help="calls of --spaces spaces through that slot")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    overrides = [f"data.train_limit={args.train}", f"search.epochs={args.epochs}", "search.warmup_epochs=1",
                 "ray.cpus_per_worker=1.0"] + ([f"space.file={args.space.resolve()}"] if args.space else [])
    cluster = LocalRayCluster().start(workers=1) if args.nodes == 2 else None
    if cluster:
        overrides.append(f"ray.address={cluster.address}")
    try:
        ratios = {}
        for batch in args.batch or [None]:
            ratios[batch] = _compare(args, overrides + ([f"search.batch_size={batch}"] if batch else []))
    finally:
        ray.shutdown()
        if cluster:
            cluster.stop()
    print("\n2 workers vs 1 worker, samples/s of the training epochs, by batch size: "
          + ", ".join(f"{batch or 'config'}: {ratio:.2f}x" for batch, ratio in ratios.items()))


def _compare(args: argparse.Namespace, overrides: list[str]) -> float:
    """One table (direct, then ``args.repeats`` rounds of Ray 1 worker and Ray 2 workers); returns 2 workers'
    samples/s over 1 worker's, the mean over rounds."""
    config = load_config(args.config, overrides)
    data_path, info = dataset_info(config)
    space = load_space(config, info)
    settings = search_settings(config)
    samples = args.train * args.epochs

    torch.set_num_threads(1)
    data = load_search_data(config, data_path)
    start = time.perf_counter()
    direct = search(space, data, settings)
    direct_s = time.perf_counter() - start

    joined = ensure_ray(config)
    if joined:
        print(joined)
    rows = [["direct (this process)", f"{direct_s:.1f}", "-", f"{direct.wall_seconds:.1f}",
             f"{samples / direct_s:.0f}", f"{samples / _training_seconds(direct):.0f}", "-"]]
    ratios = []
    for _ in range(args.repeats):  # interleaved rounds: this machine's speed drifts between runs
        timings = {}
        for workers in (1, 2):
            config_w = load_config(args.config, overrides + [f"ray.workers_per_trial={workers}"])
            with tempfile.TemporaryDirectory() as storage:
                start = time.perf_counter()
                evaluation = evaluate_spaces([space], config_w, data_path, Path(storage), f"bench-{workers}")[0]
                total = time.perf_counter() - start
            if not evaluation.ok:
                raise SystemExit(f"trial failed: {evaluation.error}")
            inner = evaluation.result.wall_seconds
            timings[workers] = _training_seconds(evaluation.result)
            path = "Ray Tune, 1 worker (in the trial)" if searches_in_trial(workers) else \
                f"Ray Tune + Train, {workers} workers"
            rows.append([path, f"{total:.1f}", f"{total - inner:.1f}", f"{inner:.1f}",
                         f"{samples / inner:.0f}", f"{samples / timings[workers]:.0f}",
                         f"{100 * (total - direct_s) / direct_s:+.0f}%"])
        ratios.append(timings[1] / timings[2])
    if args.spaces * args.generations > 1:
        rows += _one_slot_rows(args, overrides, space, data_path, data, settings)
    print(f"\nspace {space.name}: {space.cardinality} archs; {args.train} train images x {args.epochs} epochs; "
          f"batch {settings.batch_size}; {args.nodes} Ray node(s)")
    print(format_table(["path", "wall s", "fixed s", "search s (inside)", "samples/s (inside)",
                        "samples/s (training)", "overhead vs direct"], rows))
    mean = statistics.fmean(ratios)
    spread = f" ± {statistics.stdev(ratios) / len(ratios) ** 0.5:.2f} (s.e.; rounds: " \
        f"{', '.join(f'{r:.2f}' for r in ratios)})" if len(ratios) > 1 else ""
    print(f"2 workers vs 1 worker, samples/s of the training epochs: {mean:.2f}x{spread}")
    return mean


def _one_slot_rows(args: argparse.Namespace, overrides: list[str], space: SearchSpace, data_path: Path,
                   data: SearchData, settings: SearchSettings) -> list[list[str]]:
    """``args.generations`` calls of ``args.spaces`` copies of the space through one slot (1 worker) that lives
    across them, each call after as many direct searches in this process (interleaved: both sides see the same
    machine); the slot's wall time leaves out the direct searches' time."""
    config = load_config(args.config, overrides + ["ray.workers_per_trial=1", "ray.max_concurrent_trials=1"])
    count = args.spaces * args.generations
    direct_s, evaluations = 0.0, []
    with tempfile.TemporaryDirectory() as storage:
        start = time.perf_counter()
        with SearchSlots(config, data_path, Path(storage), "bench-slot", width=args.spaces, total=count) as slots:
            for generation in range(args.generations):
                direct_start = time.perf_counter()
                for _ in range(args.spaces):
                    search(space, data, settings)
                direct_s += time.perf_counter() - direct_start
                evaluations += slots.evaluate([space] * args.spaces, Path(storage) / f"gen-{generation}")
        total = time.perf_counter() - start - direct_s
    failed = [e.error for e in evaluations if not e.ok]
    if failed:
        raise SystemExit(f"search failed: {failed[0]}")
    inner = sum(e.result.wall_seconds for e in evaluations)
    samples = args.train * args.epochs * count
    return [[f"{count} x direct, interleaved", f"{direct_s:.1f}", "-", f"{direct_s:.1f}", f"{samples / direct_s:.0f}",
             "-", "-"],
            [f"{args.generations} x {args.spaces} spaces in 1 slot", f"{total:.1f}", f"{total - inner:.1f}",
             f"{inner:.1f}", f"{samples / inner:.0f}", "-",
             f"{100 * (total - direct_s) / direct_s:+.0f}% (vs {count} x direct)"]]


def _training_seconds(result: SearchResult) -> float:
    """The search's training epochs alone (weight and architecture steps): the part data parallelism splits."""
    return sum(record["train_seconds"] for record in result.history)


if __name__ == "__main__":
    main()
