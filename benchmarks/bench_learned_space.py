"""AutoSpace's claim at this machine's scale: is the learned space better than the one it grew from?

Reads a finished run (``summary.json``'s learned space, ``evolution.json``'s
template, the run's budget) and measures, side by side on Fashion-MNIST:

1. **Same NAS, two spaces.** The project's search (the run's search settings, or with
   ``--nas default`` the project's default estimator and derivation; from scratch: no weight
   pool, no fitness priors) runs ``--search-seeds`` times in
   the template and in the learned space under the run's MAdds target, deriving
   within ``--match`` below it so both sides are cost-matched. Every derived
   architecture is retrained from scratch with one recipe (``--retrain-seeds``
   seeds) and tested on the full test split. Reported: each space's mean (s.e.
   over search seeds), the difference in standard errors of the difference.
2. **Space quality without the search** (Radosavovic et al. 2019): ``--members``
   uniform random members of each space with MAdds in ``[(1 - match) T, T]``,
   each trained once with the same recipe; the two empirical distributions of test
   error are compared by their medians (bootstrap s.e.) and a one-sided
   Mann-Whitney U test (learned better).

Searches use seeds ``--first-search-seed`` onward and members are drawn with
``--member-seed``, so a second run on the same data (same ``--seed``) adds new
seeds and new members to an earlier one; ``--json`` keeps every search's and
member's accuracy for pooling.

    PYTHONPATH=. python benchmarks/bench_learned_space.py RUN_DIR [--search-seeds 3] [--members 20] [--nas default]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

from scipy.stats import mannwhitneyu

from benchmarks.retrain_jobs import Data, bootstrap_median_se, init_worker, retrain, se, worker_data
from pipeline.data import load_dataset
from pipeline.run_dir import read_run_config
from pipeline.search_job import resolve_dataset, search_settings
from spaces.arch import Arch
from spaces.cost import arch_cost
from spaces.search import SearchData, SearchSettings, search
from spaces.space import SearchSpace


DEFAULT_NAS_FIELDS = ("arch_gradient", "derive_proxy", "derive_proxy_steps", "derive_keep_resolution",
                      "weight_resolution")


def run_search(job: tuple[dict, SearchSettings]) -> dict:
    """One from-scratch search of a space in a worker; its derived architecture."""
    space, settings = SearchSpace.from_dict(job[0]), job[1]
    data = worker_data()
    result = search(space, SearchData(data.x_train, data.y_train, data.x_val, data.y_val), settings)
    return {"space": space.name, "seed": settings.seed, "arch": result.arch.encode(), "madds": result.cost.madds,
            "wall": result.wall_seconds}


def cost_matched_members(space: SearchSpace, target: float, match: float, count: int, rng: random.Random,
                         attempts: int = 200_000) -> list[str]:
    """``count`` distinct uniform members whose MAdds lie in ``[(1 - match) * target, target]``."""
    found: dict[str, None] = {}
    for _ in range(attempts):
        if len(found) >= count:
            break
        arch = space.sample(rng)
        if (1 - match) * target <= arch_cost(arch).madds <= target:
            found[arch.encode()] = None
    return list(found)


def compare(label: str, per_space: dict[str, list[float]]) -> str:
    """Learned vs template: means, their standard errors and the difference in s.e. of the difference."""
    if min(len(v) for v in per_space.values()) < 2:
        return f"{label}: too few to compare ({', '.join(f'{k} n={len(v)}' for k, v in per_space.items())})"
    means = {name: statistics.fmean(v) for name, v in per_space.items()}
    errors = {name: se(v) for name, v in per_space.items()}
    diff = means["learned"] - means["template"]
    se_diff = (errors["learned"] ** 2 + errors["template"] ** 2) ** 0.5
    return (f"{label}: learned {means['learned']:.4f} (s.e. {errors['learned']:.4f}, n={len(per_space['learned'])}) "
            f"vs template {means['template']:.4f} (s.e. {errors['template']:.4f}, n={len(per_space['template'])}): "
            f"{100 * diff:+.2f} points = {diff / se_diff:+.2f} s.e. of the difference")


def by_resolution(scored: list[tuple[str, float]]) -> str:
    """Median test accuracy and count of architectures per input resolution: what the budget favours."""
    groups: dict[int, list[float]] = {}
    for arch, accuracy in scored:
        groups.setdefault(Arch.parse(arch).input_size, []).append(accuracy)
    return ", ".join(f"{r} px median {statistics.median(v):.4f} (n={len(v)})" for r, v in sorted(groups.items()))


def print_members(errors: dict[str, list[float]], members: dict[str, list[str]], match: float) -> None:
    """Part 2: the two spaces' distributions of test error, their medians and a rank test."""
    print(f"\n2. random cost-matched members ({match:.0%} below the target), one training each")
    for name, values in errors.items():
        print(f"{name:<9} n={len(values):>3} median error {statistics.median(values):.4f} (s.e. "
              f"{bootstrap_median_se(values):.4f}), range {min(values):.4f}-{max(values):.4f}")
    test = mannwhitneyu(errors["learned"], errors["template"], alternative="less")
    gap = statistics.median(errors["template"]) - statistics.median(errors["learned"])
    gap_se = (bootstrap_median_se(errors["learned"]) ** 2 + bootstrap_median_se(errors["template"]) ** 2) ** 0.5
    print(f"median error lower in the learned space by {100 * gap:+.2f} points ({gap / gap_se:+.2f} s.e.); "
          f"Mann-Whitney U={test.statistic:.0f}, one-sided p={test.pvalue:.3f}")
    print("by input resolution (both spaces' members): " + by_resolution(
        [(arch, 1 - error) for name, found in members.items() for arch, error in zip(found, errors[name])]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run directory (summary.json, evolution.json)")
    parser.add_argument("--train", type=int, default=10000, help="train images (searches and retraining)")
    parser.add_argument("--val", type=int, default=2000, help="val images (architecture steps, derivation)")
    parser.add_argument("--test", type=int, default=10000, help="test images (final accuracies)")
    parser.add_argument("--search-seeds", type=int, default=3)
    parser.add_argument("--search-epochs", type=int, default=6)
    parser.add_argument("--members", type=int, default=20, help="random cost-matched members per space")
    parser.add_argument("--match", type=float, default=0.05, help="cost window below the target")
    parser.add_argument("--retrain-epochs", type=int, default=5)
    parser.add_argument("--retrain-lr", type=float, default=0.1)
    parser.add_argument("--retrain-seeds", type=int, default=2, help="per searched architecture")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="processes, one torch thread each")
    parser.add_argument("--first-search-seed", type=int, default=0, help="searches use seeds from this one on")
    parser.add_argument("--seed", type=int, default=0, help="data subsets (and member draws by default)")
    parser.add_argument("--member-seed", type=int, help="random member draws (default: --seed)")
    parser.add_argument("--json", type=Path, help="write every search's and member's result here")
    parser.add_argument("--nas", choices=("run", "default"), default="run",
                        help="the search in both spaces: the run's settings, or the project's default estimator and "
                             "derivation (for a run evolved with another, e.g. arch_gradient hybrid)")
    args = parser.parse_args()

    start = time.perf_counter()
    config = read_run_config(args.run)
    if config.budget.metric != "madds":
        parser.error(f"the run's budget is on {config.budget.metric}; this benchmark matches MAdds")
    target = config.budget.target
    template = SearchSpace.from_dict(json.loads((args.run / "evolution.json").read_text())["template"])
    learned = SearchSpace.from_dict(json.loads((args.run / "summary.json").read_text())["learned_space"])
    spaces = {"template": replace(template, name="template"), "learned": replace(learned, name="learned")}
    dataset = load_dataset(resolve_dataset(config))
    data = Data.subsets(dataset, args.train, args.val, args.test, args.seed)
    print(f"run {args.run}: target {target:,.0f} MAdds; train {len(data.x_train)}, val {len(data.x_val)}, "
          f"test {len(data.x_test)}; " + ", ".join(f"{k} 10^{s.log10_cardinality:.1f} archs"
                                                     for k, s in spaces.items()), flush=True)
    base = replace(search_settings(config), epochs=args.search_epochs, batch_size=args.batch,
                   derive_window=args.match, evidence_samples=0)
    if args.nas == "default":
        base = replace(base, **{name: getattr(SearchSettings, name) for name in DEFAULT_NAS_FIELDS})
    print("NAS: " + ", ".join(f"{name}={getattr(base, name)}" for name in DEFAULT_NAS_FIELDS), flush=True)
    pool = ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"), initializer=init_worker,
                               initargs=(data,))
    jobs = [(space.to_dict(), replace(base, seed=seed)) for space in spaces.values()
            for seed in range(args.first_search_seed, args.first_search_seed + args.search_seeds)]
    searches = list(pool.map(run_search, jobs))
    for s in searches:
        print(f"  search {s['space']} seed {s['seed']}: {s['wall']:.0f}s, derived {s['madds']:,} MAdds", flush=True)
    rng = random.Random(args.seed if args.member_seed is None else args.member_seed)
    members = {name: cost_matched_members(space, target, args.match, args.members, rng)
               for name, space in spaces.items()}

    retrains = [(s["arch"], seed) for s in searches for seed in range(args.retrain_seeds)]
    retrains += [(arch, 0) for found in members.values() for arch in found]
    scores = dict(zip(retrains, pool.map(retrain, [(arch, args.retrain_epochs, args.batch, args.retrain_lr, seed)
                                                   for arch, seed in retrains])))
    pool.shutdown()

    print(f"\n1. same NAS, two spaces ({args.search_seeds} search seeds x {args.retrain_seeds} retrainings each)")
    print(f"{'space':<9} {'seed':>4} {'MAdds':>11}  {'params':>9} {'test acc':>9}  arch")
    per_space: dict[str, list[float]] = {name: [] for name in spaces}
    matched: dict[str, list[float]] = {name: [] for name in spaces}
    accuracies = [statistics.fmean(scores[(s["arch"], seed)] for seed in range(args.retrain_seeds))
                  for s in searches]
    for s, accuracy in zip(searches, accuracies):
        per_space[s["space"]].append(accuracy)
        cost = arch_cost(Arch.parse(s["arch"]))
        inside = (1 - args.match) * target <= cost.madds <= target
        if inside:
            matched[s["space"]].append(accuracy)
        print(f"{s['space']:<9} {s['seed']:>4} {cost.madds:>11,}{' ' if inside else '*'} {cost.params:>9,} "
              f"{accuracy:>9.4f}  {s['arch']}")
    print(compare("all searches", per_space))
    if matched != per_space:  # a search whose derivation found nothing in the window is not cost-matched
        print(f"* outside the cost window [{1 - args.match:.2f} T, T]; without them:")
        print(compare("cost-matched searches", matched))

    errors = {name: [1 - scores[(arch, 0)] for arch in found] for name, found in members.items()}
    if args.members > 0:
        print_members(errors, members, args.match)
    print(f"wall {time.perf_counter() - start:.0f}s")
    if args.json:
        args.json.write_text(json.dumps({
            "settings": {key: str(value) for key, value in vars(args).items()}, "target": target,
            "searches": [{**s, "accuracy": accuracy} for s, accuracy in zip(searches, accuracies)],
            "members": {name: dict(zip(found, (1 - e for e in errors[name]))) for name, found in members.items()},
        }, indent=1))


if __name__ == "__main__":
    main()
