"""Does a candidate's inherited accuracy predict its accuracy trained from scratch?

The derivation (:mod:`spaces.derive`) picks, among in-budget architectures drawn
from the learned distribution, the one with the best *inherited* validation
accuracy (supernet weights, BatchNorm recalibrated). That only helps if the
ranking carries over to the architectures trained alone. This benchmark runs
``--search-seeds`` searches exactly as ``bench_search_vs_random.py`` does
(same data, budget and settings), takes ``--per-search`` of each derivation's
ranked candidates spread evenly over its ranking (best and worst included),
retrains them with the one recipe of :mod:`benchmarks.retrain_jobs`, and prints,
per search, Spearman's rho and Kendall's tau between inherited and retrained
accuracy, and the retrained rank of the derivation's pick.

    PYTHONPATH=. python benchmarks/bench_inherited_ranking.py [--search-seeds 2] [--derive-ranked 32] [--per-search 8]
        [--retrain-seeds 1] [--derive-proxy inherited|few_shot|scratch]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from scipy.stats import kendalltau, spearmanr

from benchmarks.bench_search_vs_random import inherited, inherited_of, proxy_label, run_search
from benchmarks.retrain_jobs import Data, init_worker, retrain
from pipeline.data import default_dataset, load_dataset
from spaces.derive import PROXIES
from spaces.search import ARCH_GRADIENTS, SearchSettings
from spaces.space import default_space


def spread(count: int, available: int) -> list[int]:
    """``count`` indices spread evenly over ``range(available)``, the first and last included."""
    if count >= available:
        return list(range(available))
    return sorted({round(i * (available - 1) / (count - 1)) for i in range(count)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=10000)
    parser.add_argument("--val", type=int, default=2000)
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--target", type=float, default=3e6, help="MAdds target of the searches")
    parser.add_argument("--search-seeds", type=int, default=2)
    parser.add_argument("--search-epochs", type=int, default=6)
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--arch-lr", type=float, default=0.03)
    parser.add_argument("--arch-gradient", choices=ARCH_GRADIENTS,
                        default=SearchSettings.arch_gradient, help="how the sampled path's loss reaches the logits")
    parser.add_argument("--derive-ranked", type=int, default=32, help="candidates each derivation ranks")
    parser.add_argument("--derive-proxy", choices=PROXIES, default=SearchSettings.derive_proxy,
                        help="what ranks the derivation's candidates")
    parser.add_argument("--derive-proxy-steps", type=int, default=SearchSettings.derive_proxy_steps,
                        help="training steps of the few_shot and scratch proxies")
    parser.add_argument("--per-search", type=int, default=8, help="ranked candidates of each search retrained")
    parser.add_argument("--retrain-epochs", type=int, default=5)
    parser.add_argument("--retrain-lr", type=float, default=0.1)
    parser.add_argument("--retrain-seeds", type=int, default=1,
                        help="seeds each candidate is retrained with (its mean is what a proxy is ranked against)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="processes, one torch thread each")
    parser.add_argument("--seed", type=int, default=0, help="data subsets")
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/autospace"), help="default data set cache")
    args = parser.parse_args()
    if args.per_search < 2 or args.derive_ranked < 2:
        parser.error("--per-search and --derive-ranked must be at least 2 (a ranking needs two candidates)")

    start = time.perf_counter()
    dataset = load_dataset(default_dataset(args.cache.expanduser()))
    data = Data.subsets(dataset, args.train, args.val, args.test, args.seed)
    print(f"train {len(data.x_train)}, val {len(data.x_val)}, test {len(data.x_test)}; space {default_space().name}; "
          f"target {args.target:,.0f} MAdds; {args.derive_ranked} ranked per search, {args.per_search} retrained "
          f"({args.retrain_epochs} epochs, {args.retrain_seeds} seed(s)); arch gradient {args.arch_gradient}; ranked "
          f"by {proxy_label(args.derive_proxy, args.derive_proxy_steps)}", flush=True)
    pool = ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"), initializer=init_worker,
                               initargs=(data,))
    settings = [SearchSettings(epochs=args.search_epochs, warmup_epochs=args.warmup_epochs, batch_size=args.batch,
                               seed=seed, target=args.target, cost_loss="hinge", arch_lr=args.arch_lr,
                               derive_ranked=args.derive_ranked, derive_proxy=args.derive_proxy,
                               derive_proxy_steps=args.derive_proxy_steps, arch_gradient=args.arch_gradient)
                for seed in range(args.search_seeds)]
    searches = list(pool.map(run_search, [(s, None) for s in settings]))
    for s in searches:
        if len(s["ranked"]) < 2:
            print(f"search seed {s['seed']}: its derivation ranked {len(s['ranked'])} candidate(s), too few to "
                  "compare; left out (no in-budget draws: raise the target or derive_samples)", flush=True)
    searches = [s for s in searches if len(s["ranked"]) >= 2]
    picked = [[(i + 1, s["ranked"][i]) for i in spread(args.per_search, len(s["ranked"]))] for s in searches]
    seeds = range(args.retrain_seeds)
    jobs = [(c["arch"], args.retrain_epochs, args.batch, args.retrain_lr, seed)
            for chosen in picked for _, c in chosen for seed in seeds]
    scores = iter(pool.map(retrain, jobs))
    noise: list[float] = []  # per candidate: the variance of its seeds' accuracies
    pool.shutdown()

    proxies = ["ranked by"] + (["inherited"] if args.derive_proxy != "inherited" else [])
    rhos: dict[str, list[float]] = {proxy: [] for proxy in proxies}
    for s, chosen in zip(searches, picked):
        runs = [[next(scores) for _ in seeds] for _ in chosen]
        retrained = [statistics.fmean(r) for r in runs]
        noise += [statistics.variance(r) for r in runs if len(r) > 1]
        values = {"ranked by": [c["accuracy"] for _, c in chosen], "inherited": [inherited_of(c) for _, c in chosen]}
        pick_rank = 1 + sum(r > retrained[0] for r in retrained)
        print(f"\nsearch seed {s['seed']} ({s['wall']:.0f}s): {len(s['ranked'])} ranked, inherited "
              f"{min(inherited(s)):.4f}-{max(inherited(s)):.4f}; derived {s['arch']}")
        print(f"{'rank':>5} {'MAdds':>11} {'ranked by':>10} {'inherited':>10} {'retrained':>10}")
        for (rank, c), r in zip(chosen, retrained):
            print(f"{rank:>5} {c['cost']:>11,.0f} {c['accuracy']:>10.4f} {inherited_of(c):>10.4f} "
                  f"{r:>10.4f}")
        for proxy in proxies:
            rho, tau = spearmanr(values[proxy], retrained).statistic, kendalltau(values[proxy], retrained).statistic
            rhos[proxy].append(rho)
            print(f"{proxy}: spearman rho {rho:+.2f}, kendall tau {tau:+.2f}")
        print(f"the derivation's pick retrains to rank {pick_rank} of {len(chosen)} (retrained range "
              f"{min(retrained):.4f}-{max(retrained):.4f}, median {statistics.median(retrained):.4f})")
    for proxy, found in rhos.items():
        print(f"\n{proxy}: mean spearman rho over {len(found)} searches "
              f"{statistics.fmean(found) if found else float('nan'):+.2f}", end="")
    if noise:
        print(f"\none retraining seed's noise: s.d. {100 * statistics.fmean(noise) ** 0.5:.2f} points", end="")
    print(f"\nwall {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
