"""How well does a per-op latency table predict whole-network latency?

Samples random architectures, fills a :class:`spaces.latency.LatencyTable` for
each runtime, measures every network end to end with the same timing function,
and prints Spearman's rho and the mean absolute percentage error of predicted
against measured latency, then one row per network.

    PYTHONPATH=. python benchmarks/bench_latency_table.py --archs 24 --runtime both --out table.json

``--space FILE`` samples the members of a search space instead (e.g. the quick
start's much smaller networks, where per-op times approach the call overhead).
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spaces.arch import Arch
from spaces.cost import arch_cost
from spaces.latency import RUNTIMES, LatencyTable, MeasureSettings, measure_arch_latency, rank_correlation
from spaces.space import SearchSpace

ACTS = ("relu", "relu6", "hswish", "swish")


def random_block(rng: random.Random, cin: int, cout: int, stride: int) -> str:
    """One block string; skip only where it is possible (same channels, no stride)."""
    kinds = ["ir", "ir", "ds"] + (["skip"] if cin == cout and stride == 1 else [])
    kind = rng.choice(kinds)
    if kind == "skip":
        return "skip"
    tokens = [kind, f"k{rng.choice((3, 5, 7))}"]
    if stride != 1:
        tokens.append(f"s{stride}")
    if kind == "ir":
        tokens.append(f"e{rng.randint(1, 6)}")
    tokens.append(f"c{cout}")
    if rng.random() < 0.4:
        tokens.append("se0.25")
    tokens.append(rng.choice(ACTS))
    return "_".join(tokens)


def random_arch(rng: random.Random) -> Arch:
    """A 28x28x1, 10-class network: cn_k3_c16 stem, 3-4 stages of 1-4 blocks, a 1x1 head."""
    stages, channels = [], 16
    for _ in range(rng.randint(3, 4)):
        width = rng.randrange(16, 97, 8)
        blocks = []
        for b in range(rng.randint(1, 4)):
            stride = rng.choice((1, 2)) if b == 0 else 1
            blocks.append(random_block(rng, channels, width, stride))
            channels = width
        stages.append(",".join(blocks))
    head = f"cn_k1_c{rng.randrange(64, 257, 32)}"
    return Arch.parse(f"input=1x28 stem=cn_k3_c16 stages={'|'.join(stages)} head={head} classes=10")


@dataclass(frozen=True)
class Outcome:
    """One runtime's figures: per-arch predictions and measurements, pooled and of the first pass."""

    table: LatencyTable
    madds: np.ndarray
    predicted: np.ndarray
    measured: np.ndarray
    first_predicted: np.ndarray
    first_measured: np.ndarray


def run_runtime(archs: list[Arch], settings: MeasureSettings, rounds: int) -> Outcome:
    """Fill a fresh table and measure every network in each of ``rounds`` passes, then take medians.

    Each network is measured right after its ops are, so a burst of load on a shared
    machine hits prediction and measurement alike; separate passes rarely hit the same one twice.
    """
    tables, predicted, measured = [], [], []
    for _ in range(rounds):
        table = LatencyTable.create(settings)
        row_p, row_m = [], []
        for arch in archs:
            table.ensure(arch)
            row_p.append(table.predict(arch))
            row_m.append(measure_arch_latency(arch, settings))
        tables.append(table)
        predicted.append(row_p)
        measured.append(row_m)
    table = LatencyTable.median_of(tables)
    return Outcome(table, np.array([arch_cost(a).madds for a in archs]), np.array([table.predict(a) for a in archs]),
                   np.median(measured, axis=0), np.array(predicted[0]), np.array(measured[0]))


def mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    return float(np.mean(np.abs(predicted - measured) / measured) * 100)


def report(runtime: str, rounds: int, outcome: Outcome, seconds: float) -> None:
    table, s = outcome.table, outcome.table.settings
    pred, meas = outcome.predicted, outcome.measured
    print(f"\n== {runtime}: batch {s.batch}, {s.threads} thread(s), warm-up {s.warmup}, repeats {s.repeats}, "
          f"{rounds} pass(es); {len(table)} entries, overhead {table.overhead_ms * 1e3:.1f} us, {seconds:.1f} s")
    print(f"Spearman rho predicted vs measured: {rank_correlation(pred, meas):.3f} (median of passes), "
          f"{rank_correlation(outcome.first_predicted, outcome.first_measured):.3f} (first pass alone)")
    print(f"Spearman rho MAdds vs measured:     {rank_correlation(outcome.madds, meas):.3f}")
    print(f"Spearman rho of ms per MAdd, predicted vs measured (what MAdds alone cannot rank): "
          f"{rank_correlation(pred / outcome.madds, meas / outcome.madds):.3f}")
    print(f"MAPE: {mape(pred, meas):.1f}% (median of passes), "
          f"{mape(outcome.first_predicted, outcome.first_measured):.1f}% (first pass); "
          f"measured {meas.min():.3f} .. {meas.max():.3f} ms")
    print(f"{'arch':>4} {'MAdds':>11} {'pred ms':>9} {'meas ms':>9} {'err %':>7}")
    for i, (madds, p, m) in enumerate(zip(outcome.madds, pred, meas)):
        print(f"{i:>4} {madds:>11,} {p:>9.3f} {m:>9.3f} {(p - m) / m * 100:>+7.1f}")


def table_path(out: Path, runtime: str, both: bool) -> Path:
    return out.with_name(f"{out.stem}.{runtime}{out.suffix}") if both else out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=24, help="random architectures to sample (>= 2)")
    parser.add_argument("--runtime", choices=(*RUNTIMES, "both"), default="both")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="passes to take medians over (noise resistance)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="save each table here (runtime-suffixed when --runtime both)")
    parser.add_argument("--space", type=Path, help="sample members of this search space (YAML/JSON) instead")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    space = SearchSpace.load(args.space) if args.space else None
    archs = [space.sample(rng) if space else random_arch(rng) for _ in range(args.archs)]
    runtimes = RUNTIMES if args.runtime == "both" else (args.runtime,)
    start = time.perf_counter()
    for runtime in runtimes:
        settings = MeasureSettings(runtime, args.batch, args.threads, args.warmup, args.repeats)
        t0 = time.perf_counter()
        outcome = run_runtime(archs, settings, args.rounds)
        report(runtime, args.rounds, outcome, time.perf_counter() - t0)
        if args.out:
            outcome.table.save(table_path(args.out, runtime, len(runtimes) > 1))
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
