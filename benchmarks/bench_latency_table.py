"""How well does a per-op latency table predict whole-network latency?

Samples random architectures, fills a :class:`spaces.latency.LatencyTable` for
each runtime, measures every network end to end with the same timing function,
and prints Spearman's rho and the mean absolute percentage error of predicted
against measured latency, then one row per network.

    PYTHONPATH=. python benchmarks/bench_latency_table.py --archs 24 --runtime both --out table.json
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
class Result:
    madds: int
    predicted_ms: float
    measured_ms: float


def run_runtime(archs: list[Arch], settings: MeasureSettings) -> tuple[LatencyTable, list[Result]]:
    """Fill the table arch by arch, measuring each network right after its ops so drift hits both alike."""
    table = LatencyTable.create(settings)
    results = []
    for arch in archs:
        table.ensure(arch)
        results.append(Result(arch_cost(arch).madds, table.predict(arch), measure_arch_latency(arch, settings)))
    return table, results


def report(runtime: str, table: LatencyTable, results: list[Result], seconds: float) -> None:
    predicted = np.array([r.predicted_ms for r in results])
    measured = np.array([r.measured_ms for r in results])
    madds = np.array([r.madds for r in results])
    mape = float(np.mean(np.abs(predicted - measured) / measured) * 100)
    s = table.settings
    print(f"\n== {runtime}: batch {s.batch}, {s.threads} thread(s), warm-up {s.warmup}, repeats {s.repeats}; "
          f"{len(table)} entries, overhead {table.overhead_ms * 1e3:.1f} us, {seconds:.1f} s")
    print(f"Spearman rho (predicted vs measured): {rank_correlation(predicted, measured):.3f}")
    print(f"Spearman rho (MAdds vs measured):     {rank_correlation(madds, measured):.3f}")
    print(f"MAPE: {mape:.1f}%   measured range {measured.min():.3f} .. {measured.max():.3f} ms")
    print(f"{'arch':>4} {'MAdds':>11} {'pred ms':>9} {'meas ms':>9} {'err %':>7}")
    for i, r in enumerate(results):
        err = (r.predicted_ms - r.measured_ms) / r.measured_ms * 100
        print(f"{i:>4} {r.madds:>11,} {r.predicted_ms:>9.3f} {r.measured_ms:>9.3f} {err:>+7.1f}")


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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="save each table here (runtime-suffixed when --runtime both)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    archs = [random_arch(rng) for _ in range(args.archs)]
    runtimes = RUNTIMES if args.runtime == "both" else (args.runtime,)
    start = time.perf_counter()
    for runtime in runtimes:
        settings = MeasureSettings(runtime, args.batch, args.threads, args.warmup, args.repeats)
        t0 = time.perf_counter()
        table, results = run_runtime(archs, settings)
        report(runtime, table, results, time.perf_counter() - t0)
        if args.out:
            table.save(table_path(args.out, runtime, len(runtimes) > 1))
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
