"""Does the supernet search beat random architectures of equal or lower MAdds on Fashion-MNIST?

Runs the DMasking search under a MAdds target, then samples random members of
the same space, keeping the first ``--random`` whose MAdds do not exceed the
searched architecture's. Every architecture, the searched one included, is
retrained from scratch with the same short schedule (SGD, cosine per step,
fixed seed, the same batches) and scored on held-out test images; the claim
holds if the searched architecture beats the random median. With
``--retrain-seeds N`` every architecture is retrained N times (seeds 0..N-1:
init and batch order) and its mean accuracy is compared, with the standard
error of that mean, so a gap can be told from retraining noise.

The supernet step is the cost (about 1.5 s per 128-image weight step on one
core here), so the space is the default space cut to at most ``--layers``
layers per stage (widths, cells and resolutions unchanged) and the data are
seeded subsets of the train, val and test splits.

    PYTHONPATH=. python benchmarks/bench_search_vs_random.py [--train 6000] [--target 3e6] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch

from pipeline.data import default_dataset, load_dataset
from spaces.arch import Arch
from spaces.cost import arch_cost
from spaces.modules import ChildNet
from spaces.search import SearchData, SearchSettings, evaluate, search, train_epoch
from spaces.space import SearchSpace, default_space
from spaces.supernet import resize_input


def trimmed_space(layers: int) -> SearchSpace:
    """The default space with each stage cut to its first ``layers`` layers."""
    data = default_space().to_dict()
    for stage in data["stages"]:
        stage["layers"] = stage["layers"][:layers]
        stage["min_depth"] = min(stage["min_depth"], len(stage["layers"]))
    return SearchSpace.from_dict(data | {"name": f"{data['name']}-{layers}layers"})


def random_rivals(space: SearchSpace, searched: Arch, count: int, seed: int, attempts: int) -> list[Arch]:
    """The first ``count`` distinct random members with MAdds at most the searched arch's."""
    rng, budget = random.Random(seed), arch_cost(searched).madds
    found: dict[str, Arch] = {}
    for _ in range(attempts):
        arch = space.sample(rng)
        if arch_cost(arch).madds <= budget and arch.encode() != searched.encode():
            found.setdefault(arch.encode(), arch)
            if len(found) == count:
                break
    return list(found.values())


def retrain(arch: Arch, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
            epochs: int, batch_size: int, lr: float, seed: int) -> float:
    """Test accuracy after training ``arch`` from scratch; every arch gets the same init seed and batches."""
    torch.manual_seed(seed)
    net = ChildNet(arch)
    params = list(net.parameters())
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=4e-5)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * (len(x) // batch_size))
    order = torch.Generator().manual_seed(seed)
    x = resize_input(x, arch.input_size)
    net.train()
    for _ in range(epochs):
        train_epoch(net, params, optimizer, x, y, batch_size, order, before_step=schedule.step)
    net.eval()
    return evaluate(net, resize_input(x_test, arch.input_size), y_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=6000, help="train images (search weights, retraining)")
    parser.add_argument("--val", type=int, default=1000, help="val images (search architecture steps)")
    parser.add_argument("--test", type=int, default=2000, help="test images (final accuracies)")
    parser.add_argument("--layers", type=int, default=2, help="layers kept per stage of the default space")
    parser.add_argument("--target", type=float, default=3e6, help="MAdds target of the search")
    parser.add_argument("--search-epochs", type=int, default=3)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--retrain-epochs", type=int, default=3)
    parser.add_argument("--retrain-lr", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--random", type=int, default=8, help="random architectures to compare with")
    parser.add_argument("--attempts", type=int, default=100_000, help="random samples tried at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retrain-seeds", type=int, default=1, help="retrainings per architecture (mean reported)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine 2 threads made a step 5x slower)")
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/autospace"), help="default data set cache")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    path = default_dataset(args.cache.expanduser())
    dataset = load_dataset(path)
    x_train, y_train = dataset.split("train", limit=args.train, seed=args.seed)
    x_val, y_val = dataset.split("val", limit=args.val, seed=args.seed)
    x_test, y_test = dataset.split("test", limit=args.test, seed=args.seed)
    space = trimmed_space(args.layers)
    print(f"data {path.name}: train {len(x_train)}, val {len(x_val)}, test {len(x_test)}; space {space.name} "
          f"(10^{space.log10_cardinality:.1f} archs); {torch.get_num_threads()} threads", flush=True)

    settings = SearchSettings(epochs=args.search_epochs, warmup_epochs=args.warmup_epochs, batch_size=args.batch,
                              seed=args.seed, target=args.target)
    result = search(space, SearchData(x_train, y_train, x_val, y_val), settings,
                    on_epoch=lambda r: print(f"  search epoch {r['epoch']}: train loss {r['train_loss']:.3f}, "
                                             f"expected MAdds {r['expected_madds']:,.0f}", flush=True))
    print(f"search: {result.wall_seconds:.0f}s, target {args.target:,.0f} MAdds, derived {result.cost.madds:,} "
          f"MAdds, inherited+finetuned val acc {result.val_accuracy:.4f}", flush=True)

    rivals = random_rivals(space, result.arch, args.random, args.seed, args.attempts)
    if len(rivals) < args.random:
        print(f"only {len(rivals)} random archs within {result.cost.madds:,} MAdds in {args.attempts} attempts")
    if not rivals:
        raise SystemExit("nothing to compare with; raise --target or --attempts")
    seeds = range(args.seed, args.seed + args.retrain_seeds)
    print(f"\n{'#':>3} {'kind':<9} {'MAdds':>11} {'params':>9} {'test acc':>9} {'s.e.':>7} {'retrain s':>10}  "
          f"per-seed accuracies / arch")
    accuracies, errors = [], []
    for i, arch in enumerate([result.arch, *rivals]):
        start = time.perf_counter()
        runs = [retrain(arch, x_train, y_train, x_test, y_test, args.retrain_epochs, args.batch, args.retrain_lr,
                        seed) for seed in seeds]
        cost = arch_cost(arch)
        accuracies.append(statistics.fmean(runs))
        errors.append(statistics.stdev(runs) / len(runs) ** 0.5 if len(runs) > 1 else float("nan"))
        print(f"{i:>3} {'searched' if i == 0 else 'random':<9} {cost.madds:>11,} {cost.params:>9,} "
              f"{accuracies[-1]:>9.4f} {errors[-1]:>7.4f} {time.perf_counter() - start:>10.0f}  "
              f"{' '.join(f'{r:.4f}' for r in runs)}  {arch.encode()}", flush=True)

    median = statistics.median(accuracies[1:])
    rank = 1 + sum(a > accuracies[0] for a in accuracies[1:])
    print(f"\nsearched acc {accuracies[0]:.4f} (s.e. {errors[0]:.4f}, {len(seeds)} retraining seeds), random median "
          f"{median:.4f} (n={len(rivals)}, range {min(accuracies[1:]):.4f}-{max(accuracies[1:]):.4f}); "
          f"searched ranks {rank} of {len(accuracies)}; searched > median: {'yes' if accuracies[0] > median else 'no'}")


if __name__ == "__main__":
    main()
