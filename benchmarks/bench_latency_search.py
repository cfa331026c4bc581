"""Does a latency budget steer the supernet search? Searches at several latency targets, table vs measured.

Measures the space's whole latency table on one runtime (every entry a member
can need, :func:`spaces.supernet.space_latency_keys`), then runs one search per
target under ``budget_metric="latency"`` on seeded Fashion-MNIST subsets. Targets
are quantiles of the predicted latency of random members of the space, so they
mean the same on any machine; quantile 1.0 (the slowest sampled member) leaves
the search all but unconstrained. Per search it prints the expected latency at
the end (softmax of the logits), the derived architecture's predicted latency
(table) and measured latency (end to end, median of passes), its MAdds and
its inherited + fine-tuned validation accuracy.

    PYTHONPATH=. python benchmarks/bench_latency_search.py [--space configs/quickstart_space.yaml]
        [--runtime onnxruntime] [--supernet dmasking] [--quantiles 0.1 0.3 0.6 1.0]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch

from pipeline.data import default_dataset, load_dataset
from spaces.cost import arch_cost
from spaces.latency import RUNTIMES, LatencyTable, MeasureSettings, measure_arch_latency
from spaces.search import SearchData, SearchSettings, search
from spaces.space import SearchSpace
from spaces.supernet import space_latency_keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=Path("configs/quickstart_space.yaml"))
    parser.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime")
    parser.add_argument("--supernet", choices=("dmasking", "densenas"), default="dmasking")
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.1, 0.3, 0.6, 1.0])
    parser.add_argument("--members", type=int, default=200, help="random members whose latency sets the targets")
    parser.add_argument("--loss", choices=("fbnet", "hinge"), default="hinge")
    parser.add_argument("--cost-lambda", type=float, default=2.0)
    parser.add_argument("--arch-lr", type=float, default=0.05)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--val", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--passes", type=int, default=3, help="end-to-end measurements to take the median of")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/autospace"), help="default data set cache")
    args = parser.parse_args()
    torch.set_num_threads(1)

    dataset = load_dataset(default_dataset(args.cache.expanduser()))
    x_train, y_train = dataset.split("train", limit=args.train, seed=args.seed)
    x_val, y_val = dataset.split("val", limit=args.val, seed=args.seed)
    data = SearchData(x_train, y_train, x_val, y_val)
    space = SearchSpace.load(args.space).adapted(in_channels=x_train.shape[1], num_classes=10)
    settings = MeasureSettings(args.runtime)

    start = time.perf_counter()
    table = LatencyTable.create(settings)
    table.ensure_keys(space_latency_keys(space))
    print(f"space {space.name} (10^{space.log10_cardinality:.1f} archs): {len(table)} {args.runtime} entries "
          f"measured in {time.perf_counter() - start:.1f} s; overhead {table.overhead_ms * 1e3:.1f} us", flush=True)
    rng = random.Random(args.seed)
    member_ms = sorted(table.predict(space.sample(rng)) for _ in range(args.members))
    print(f"predicted latency of {args.members} random members: min {member_ms[0]:.4f}, median "
          f"{statistics.median(member_ms):.4f}, max {member_ms[-1]:.4f} ms", flush=True)

    rows = []
    for q in args.quantiles:
        target = member_ms[min(int(q * len(member_ms)), len(member_ms) - 1)]
        search_settings = SearchSettings(epochs=args.epochs, warmup_epochs=args.warmup_epochs, batch_size=args.batch,
                                         arch_lr=args.arch_lr, cost_loss=args.loss, cost_lambda=args.cost_lambda,
                                         supernet=args.supernet, budget_metric="latency", target=target,
                                         seed=args.seed)
        result = search(space, data, search_settings, latency_table=table)
        measured = statistics.median(measure_arch_latency(result.arch, settings) for _ in range(args.passes))
        rows.append((q, target, result, measured))
        print(f"  q={q:.2f} target {target:.4f} ms: expected {result.expected_latency_ms:.4f}, derived predicted "
              f"{result.predicted_latency_ms:.4f}, measured {measured:.4f} ms, val acc {result.val_accuracy:.4f} "
              f"({result.wall_seconds:.0f} s)", flush=True)

    print(f"\n{args.supernet}, {args.loss} loss (lambda {args.cost_lambda}), arch lr {args.arch_lr}, {args.epochs} "
          f"epochs ({args.warmup_epochs} warm-up), {args.train}/{args.val} images, {args.runtime} batch 1")
    print(f"{'quantile':>8} {'target ms':>10} {'expected':>9} {'predicted':>10} {'measured':>9} {'pred/target':>11} "
          f"{'MAdds':>10} {'val acc':>8}  derived arch")
    for q, target, result, measured in rows:
        print(f"{q:>8.2f} {target:>10.4f} {result.expected_latency_ms:>9.4f} {result.predicted_latency_ms:>10.4f} "
              f"{measured:>9.4f} {result.predicted_latency_ms / target:>11.2f} {arch_cost(result.arch).madds:>10,} "
              f"{result.val_accuracy:>8.4f}  {result.arch.encode()}")
    predicted = [r.predicted_latency_ms for _, _, r, _ in rows]
    print(f"derived latency rises with the target: {'yes' if predicted == sorted(predicted) else 'no'}; "
          f"derived within target: {sum(r.predicted_latency_ms <= t for _, t, r, _ in rows)}/{len(rows)}")


if __name__ == "__main__":
    main()
