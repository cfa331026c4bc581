"""Benchmark: import the default data set, then load it the fast way and the naive way.

The fast path views the ``fixed_size_binary`` image column as one numpy buffer;
the naive path decodes row by row (``to_pylist()`` + ``np.frombuffer`` per image),
which is what loading a Parquet image column usually looks like. Both produce
the same normalised tensors; the ratio is the point of the storage layout.

    .venv/bin/python benchmarks/bench_data_load.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from pipeline.data import DatasetInfo, default_dataset, load_dataset, read_info


def load_fast(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    data = load_dataset(path)
    return {name: data.split(name) for name in data.splits}


def load_naive(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    info = read_info(path)
    table = pq.read_table(path)
    images = table.column("image").to_pylist()
    labels = np.asarray(table.column("label").to_pylist())
    splits = np.asarray(table.column("split").to_pylist())
    channels, height, width = info.shape
    mean = np.asarray(info.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(info.std, dtype=np.float32).reshape(1, -1, 1, 1)
    loaded = {}
    for name in info.splits:
        rows = np.flatnonzero(splits == name)
        pixels = np.stack([np.frombuffer(images[row], dtype=np.uint8).reshape(height, width, channels) for row in rows])
        x = (pixels.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255) - mean) / std
        loaded[name] = (torch.from_numpy(x), torch.from_numpy(labels[rows].astype(np.int64)))
    return loaded


def best_and_median(run: Callable[[], object], repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per loader")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        path = default_dataset(Path(cache))
        import_seconds = time.perf_counter() - start
        info: DatasetInfo = read_info(path)
        total = sum(info.counts.values())

        fast, naive = load_fast(path), load_naive(path)  # warm-up, and proof both give the same tensors
        for name in fast:
            torch.testing.assert_close(fast[name], naive[name], rtol=0, atol=1e-6)

        fast_best, fast_median = best_and_median(lambda: load_fast(path), args.repeats)
        naive_best, naive_median = best_and_median(lambda: load_naive(path), args.repeats)
        size_mb = path.stat().st_size / 1e6

    splits = ", ".join(f"{name} {count}" for name, count in info.counts.items())
    print(f"data set   {path.name}: {total} images {'x'.join(map(str, info.shape))} ({splits}), {size_mb:.1f} MB")
    print(f"torch threads {torch.get_num_threads()}, repeats {args.repeats} (best / median seconds)")
    print()
    print(f"{'step':<34}{'best s':>9}{'median s':>10}{'images/s':>13}")
    rows = [
        ("import (IDX/digits -> Parquet)", import_seconds, import_seconds),
        ("load, all splits (fast)", fast_best, fast_median),
        ("load, all splits (naive per-row)", naive_best, naive_median),
    ]
    for label, best, median in rows:
        print(f"{label:<34}{best:>9.3f}{median:>10.3f}{total / best:>13,.0f}")
    print()
    print(f"speed-up fast vs naive: {naive_best / fast_best:.1f}x (best), {naive_median / fast_median:.1f}x (median)")


if __name__ == "__main__":
    main()
