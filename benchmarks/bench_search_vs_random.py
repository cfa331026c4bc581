"""Does the supernet search beat cost-matched random architectures of its space on Fashion-MNIST?

The claim is measured the way NAS papers are judged (Li & Talwalkar 2019; Yang
et al. 2020): ``--search-seeds`` independent searches (the project's default
single-path search, seeds 0..S-1) under one budget each derive an architecture;
for each, ``--rivals`` random members of the same space whose cost lies within
``--match`` (±5%) of the searched one's are drawn. The budget is a MAdds target
(``--target``) or, with ``--metric latency``, a predicted latency: the space's
latency table is measured on ``--runtime`` (batch 1, one thread) and the target
is the ``--latency-quantile`` of the predicted latency of 200 random members (so
it means the same on any machine); rivals are then matched on predicted latency. Every
architecture — searched and random — is retrained from scratch with one recipe
(SGD, Nesterov, cosine per step; ``--retrain-seeds`` seeds each: init and batch
order) and scored on the test split (the full 10,000 images by default: binomial
standard error ≈ 0.3 points). Searches and retrainings run in ``--workers``
processes of one thread each.

Reported: every architecture's mean test accuracy and its standard error over
retraining seeds; the searched architectures' mean (s.e. over search seeds) vs
the rivals' median (s.e. by bootstrap), their difference in standard errors of
the difference, the searched mean's rank among the rivals, and a paired view
(each search against its own matched rivals).

    PYTHONPATH=. python benchmarks/bench_search_vs_random.py [--search-seeds 3] [--rivals 4] [--target 3e6]
        [--metric latency --latency-quantile 0.3 --runtime onnxruntime --latency-table table.json]
        [--arch-gradient reinforce]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from benchmarks.retrain_jobs import (Data, bootstrap_median_se, init_worker, madds, matched_rivals, retrain, se,
                                     worker_data)
from pipeline.data import default_dataset, load_dataset
from spaces.arch import Arch
from spaces.cost import arch_cost
from spaces.latency import RUNTIMES, LatencyTable, MeasureSettings
from spaces.derive import PROXIES
from spaces.search import ARCH_GRADIENTS, SearchData, SearchSettings, search
from spaces.space import SearchSpace, default_space
from spaces.supernet import space_latency_keys

LATENCY_MEMBERS = 200  # random members whose predicted latency sets a latency target


def run_search(job: tuple[SearchSettings, dict | None]) -> dict:
    """One search in a worker (with the latency table as a dict under a latency budget); what it derived."""
    settings, table = job
    data = worker_data()
    result = search(default_space(), SearchData(data.x_train, data.y_train, data.x_val, data.y_val), settings,
                    latency_table=None if table is None else LatencyTable.from_dict(table))
    expected = result.expected_madds if table is None else result.expected_latency_ms
    return {"seed": settings.seed, "arch": result.arch.encode(), "madds": result.cost.madds,
            "expected": expected, "val_accuracy": result.val_accuracy,
            "entropy": result.entropy["mean"], "max_entropy": result.entropy["max"], "wall": result.wall_seconds,
            "ranked": [c.to_dict() for c in result.candidates if c.accuracy is not None]}


def inherited(searched: dict) -> list[float]:
    """The inherited accuracies of the candidates a search's derivation ranked (in its ranking's order)."""
    return [inherited_of(c) for c in searched["ranked"]]


def inherited_of(candidate: dict) -> float:
    """A ranked candidate's inherited accuracy (its ranking accuracy when the proxy was the inherited one)."""
    return candidate.get("inherited", candidate["accuracy"])


def proxy_label(proxy: str, steps: int, keep_resolution: bool = False) -> str:
    """The derivation's proxy as the benchmarks print it (steps only where it trains)."""
    label = proxy if proxy == "inherited" else f"{proxy} ({steps} steps)"
    return f"{label} at the most probable resolution" if keep_resolution else label


def latency_budget(space: SearchSpace, runtime: str, seed: int, quantile: float,
                   saved: Path | None = None) -> tuple[LatencyTable, float]:
    """``space``'s latency table on ``runtime`` and the ``quantile`` of its random members' predicted latency.

    With ``saved``, a table already there is reused (missing entries measured) and the table is written back,
    so a later run can price its searches and rivals, and set its target, exactly as this one did.
    """
    reused = saved is not None and saved.exists()
    table = LatencyTable.load(saved, runtime) if reused else LatencyTable.create(MeasureSettings(runtime))
    measured = table.ensure_keys(space_latency_keys(space))
    if saved is not None:
        table.save(saved)
        print(f"latency table {'read from' if reused else 'saved to'} {saved} ({len(measured)} entries measured now)")
    rng = random.Random(seed)
    member_ms = sorted(table.predict(space.sample(rng)) for _ in range(LATENCY_MEMBERS))
    target = member_ms[min(int(quantile * len(member_ms)), len(member_ms) - 1)]
    print(f"latency table: {len(table)} {runtime} entries; {LATENCY_MEMBERS} random members predict "
          f"{member_ms[0]:.4f}-{member_ms[-1]:.4f} ms (median {statistics.median(member_ms):.4f}); target = "
          f"quantile {quantile} = {target:.4f} ms", flush=True)
    return table, target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=10000, help="train images (search weights, retraining)")
    parser.add_argument("--val", type=int, default=2000, help="val images (architecture steps, derivation)")
    parser.add_argument("--test", type=int, default=10000, help="test images (final accuracies)")
    parser.add_argument("--metric", choices=("madds", "latency"), default="madds", help="what the budget prices")
    parser.add_argument("--target", type=float, default=3e6, help="MAdds target of the search (--metric madds)")
    parser.add_argument("--latency-quantile", type=float, default=0.3,
                        help="latency target: this quantile of random members' predicted latency (--metric latency)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime", help="latency table runtime")
    parser.add_argument("--latency-table", type=Path, default=None,
                        help="JSON latency table: reused if it exists, else measured and saved there "
                             "(--metric latency)")
    parser.add_argument("--search-seeds", type=int, default=3)
    parser.add_argument("--search-epochs", type=int, default=6)
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--cost-loss", choices=["fbnet", "hinge"], default="hinge")
    parser.add_argument("--arch-lr", type=float, default=0.03, help="Adam learning rate of the architecture")
    parser.add_argument("--arch-gradient", choices=ARCH_GRADIENTS,
                        default=SearchSettings.arch_gradient, help="how the sampled path's loss reaches the logits")
    parser.add_argument("--derive-ranked", type=int, default=SearchSettings.derive_ranked,
                        help="in-budget candidates the derivation ranks (by --derive-proxy)")
    parser.add_argument("--derive-proxy", choices=PROXIES, default=SearchSettings.derive_proxy,
                        help="what ranks the derivation's candidates")
    parser.add_argument("--derive-proxy-steps", type=int, default=SearchSettings.derive_proxy_steps,
                        help="training steps of the few_shot and scratch proxies")
    parser.add_argument("--derive-keep-resolution", action="store_true",
                        help="rank only candidates at the most probable architecture's resolution")
    parser.add_argument("--rivals", type=int, default=4, help="cost-matched random rivals per searched arch")
    parser.add_argument("--match", type=float, default=0.05, help="relative MAdds window of a rival")
    parser.add_argument("--retrain-epochs", type=int, default=5)
    parser.add_argument("--retrain-lr", type=float, default=0.1)
    parser.add_argument("--retrain-seeds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="processes, one torch thread each")
    parser.add_argument("--seed", type=int, default=0, help="data subsets and rival draws")
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/autospace"), help="default data set cache")
    args = parser.parse_args()
    if args.latency_table is not None and args.metric != "latency":
        parser.error("--latency-table prices a latency budget: add --metric latency, or drop --latency-table")

    start = time.perf_counter()
    path = default_dataset(args.cache.expanduser())
    dataset = load_dataset(path)
    data = Data.subsets(dataset, args.train, args.val, args.test, args.seed)
    space = default_space()
    table, target = latency_budget(space, args.runtime, args.seed, args.latency_quantile, args.latency_table) \
        if args.metric == "latency" else (None, args.target)
    cost, unit, fmt = (madds, "MAdds", "{:,.0f}") if table is None else (table.predict, "ms", "{:.4f}")
    proxy = proxy_label(args.derive_proxy, args.derive_proxy_steps, args.derive_keep_resolution)
    print(f"data {path.name}: train {len(data.x_train)}, val {len(data.x_val)}, test {len(data.x_test)}; space "
          f"{space.name} (10^{space.log10_cardinality:.1f} archs); target {fmt.format(target)} {unit}, "
          f"{args.cost_loss} loss, arch lr {args.arch_lr} ({args.arch_gradient}), "
          f"{args.derive_ranked} candidates ranked by {proxy}; "
          f"{args.workers} workers x 1 thread", flush=True)
    pool = ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"), initializer=init_worker,
                               initargs=(data,))
    jobs = [(SearchSettings(epochs=args.search_epochs, warmup_epochs=args.warmup_epochs, batch_size=args.batch,
                            seed=seed, target=target, cost_loss=args.cost_loss, arch_lr=args.arch_lr,
                            budget_metric=args.metric, derive_ranked=args.derive_ranked,
                            derive_proxy=args.derive_proxy, derive_proxy_steps=args.derive_proxy_steps,
                            derive_keep_resolution=args.derive_keep_resolution, arch_gradient=args.arch_gradient),
             None if table is None else table.to_dict())
            for seed in range(args.search_seeds)]
    searches = list(pool.map(run_search, jobs))
    for s in searches:
        print(f"  search seed {s['seed']}: {s['wall']:.0f}s, derived {fmt.format(cost(Arch.parse(s['arch'])))} "
              f"{unit} (expected {fmt.format(s['expected'])}), val acc {s['val_accuracy']:.4f}, "
              f"entropy mean {s['entropy']:.2f} max {s['max_entropy']:.2f}; {len(s['ranked'])} ranked, inherited "
              f"acc {min(inherited(s), default=0):.4f}-{max(inherited(s), default=0):.4f}", flush=True)

    rng, taken = random.Random(args.seed), {s["arch"] for s in searches}
    rivals = {s["seed"]: matched_rivals(space, s["arch"], args.rivals, args.match, rng, taken, cost)
              for s in searches}
    archs = [(f"searched s{s['seed']}", s["arch"], s["seed"]) for s in searches]
    archs += [(f"random s{seed}", arch, seed) for seed, found in rivals.items() for arch in found]
    seeds = range(args.retrain_seeds)
    jobs = [(arch, args.retrain_epochs, args.batch, args.retrain_lr, seed) for _, arch, _ in archs for seed in seeds]
    scores = list(pool.map(retrain, jobs))
    pool.shutdown()

    print(f"\n{'#':>3} {'kind':<12} {'MAdds':>11} {'params':>9} {'pred ms':>8} {'test acc':>9} {'s.e.':>7}  "
          "per-seed / arch")
    means: dict[str, float] = {}
    seed_variances: list[float] = []
    for i, (kind, arch, _) in enumerate(archs):
        runs = scores[i * len(seeds):(i + 1) * len(seeds)]
        means[arch] = statistics.fmean(runs)
        if len(runs) > 1:
            seed_variances.append(statistics.variance(runs))
        counts = arch_cost(Arch.parse(arch))
        latency = "" if table is None else f"{table.predict(Arch.parse(arch)):.4f}"
        print(f"{i:>3} {kind:<12} {counts.madds:>11,} {counts.params:>9,} {latency:>8} {means[arch]:>9.4f} "
              f"{se(runs):>7.4f}  {' '.join(f'{r:.4f}' for r in runs)}  {arch}")

    searched = [means[s["arch"]] for s in searches]
    rival_scores = [means[a] for found in rivals.values() for a in found]
    mean, median = statistics.fmean(searched), statistics.median(rival_scores)
    se_diff = (se(searched) ** 2 + bootstrap_median_se(rival_scores) ** 2) ** 0.5
    rank = 1 + sum(r > mean for r in rival_scores)
    paired = [means[s["arch"]] - statistics.median(means[a] for a in rivals[s["seed"]]) for s in searches
              if rivals[s["seed"]]]
    test_se = (mean * (1 - mean) / len(data.x_test)) ** 0.5
    print(f"\nsearched mean {mean:.4f} (s.e. {se(searched):.4f} over {len(searched)} searches), rivals median "
          f"{median:.4f} (n={len(rival_scores)}, s.e. {bootstrap_median_se(rival_scores):.4f}, range "
          f"{min(rival_scores):.4f}-{max(rival_scores):.4f}); test split s.e. {test_se:.4f}")
    print(f"difference {100 * (mean - median):+.2f} points = {(mean - median) / se_diff:+.2f} s.e. of the difference; "
          f"searched mean ranks {rank} of {len(rival_scores) + 1} (top quartile: "
          f"{'yes' if rank <= (len(rival_scores) + 1) / 4 else 'no'})")
    print(f"paired (each search minus its own rivals' median): "
          f"{' '.join(f'{100 * p:+.2f}' for p in paired)} points, mean {100 * statistics.fmean(paired):+.2f} "
          f"(s.e. {100 * se(paired):.2f})")
    if seed_variances and len(rival_scores) > 1:
        noise = statistics.fmean(seed_variances)  # one retraining seed's variance
        spread = statistics.variance(rival_scores) - noise / len(seeds)  # what the rivals' architectures differ by
        print(f"one retraining seed's noise s.d. {100 * noise ** 0.5:.2f} points; the rivals' architectures' own s.d. "
              f"{100 * max(spread, 0.0) ** 0.5:.2f} points (their means' variance less the seeds' share)")
    print(f"wall {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
