"""Supernet training step vs its widest child: time and memory, both supernets, single path and relaxed.

A search is affordable only if a supernet step costs about one child's. For each
supernet on the packaged default space this times, interleaved in every round:

- ``child``: one SGD step (forward, backward, update) of the widest child
  (widest widths, largest resolution, each layer's first cell), a plain
  :class:`spaces.modules.ChildNet`;
- ``path widest``: the single-path weight step on that same child's choice (the
  overhead of slicing and gating alone);
- ``path sampled``: the single-path weight step on a freshly sampled
  architecture each round (what a search runs; a sampled child is usually
  smaller than the widest);
- ``search iter``: a sampled weight step plus the architecture step that follows
  it in a search (another sampled child on a val batch, the expected cost, Adam);
- ``path NCHW``: ``path sampled`` on a twin supernet in the default NCHW
  layout, drawing the same paths (searches run channels-last);
- ``relaxed``: the Gumbel-softmax mixture of every candidate at max width and
  resolution (how the supernets trained before single path).

Median over rounds; ``ratio`` is each step's median over the child's. Memory is
the bytes autograd saves for backward (:func:`benchmarks.measure.saved_bytes`).

    PYTHONPATH=. python benchmarks/bench_supernet_step.py [--rounds 15] [--batch 128] [--threads 1] \
        [--supernets densenas]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from benchmarks.measure import saved_bytes
from spaces.cost import arch_cost
from spaces.search import SUPERNETS, SearchSettings, cost_aware_loss
from spaces.space import SearchSpace, default_space
from spaces.supernet import ArchChoice, PathSample, Supernet, resize_input


def widest_choice(space: SearchSpace) -> ArchChoice:
    """Widest widths, largest resolution, each layer's first cell: the child the relaxed supernet's
    max-width map is built for (the reference of the ~8x figure measured before single path)."""
    return ArchChoice(tuple(tuple(0 for _ in s.layers) for s in space.stages),
                      tuple(len(s.widths) - 1 for s in space.stages), len(space.resolutions) - 1)


def steps(net: Supernet, nchw: Supernet, x: torch.Tensor, y: torch.Tensor
          ) -> tuple[dict[str, Callable[[], torch.Tensor]], torch.nn.Module, ArchChoice]:
    """Each variant as a function returning its loss (backward and update happen in the caller), the widest
    child and its choice. ``net`` and the child are channels-last, as a search runs them; ``nchw`` is the
    same supernet in the default layout, for the layout's own ratio."""
    choice = widest_choice(net.space)
    child = net.child(choice).train().to(memory_format=torch.channels_last)
    net.train().to(memory_format=torch.channels_last)
    nchw.train()
    generator, twin = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    settings = SearchSettings(target=5e6)
    size = net.space.resolutions[choice.resolution]

    def arch_loss() -> torch.Tensor:
        path = net.sample_path(1.0, generator, gates=True)
        ce = F.cross_entropy(net(x, path), y)
        return cost_aware_loss(ce, net.expected_cost(net.mean_sample(grad=True))[0], settings)

    return {
        "child": lambda: F.cross_entropy(child(resize_input(x, size)), y),
        "path widest": lambda: F.cross_entropy(net(x, PathSample.of(choice)), y),
        "path sampled": lambda: F.cross_entropy(net(x, net.sample_path(1.0, generator, gates=False)), y),
        "path NCHW": lambda: F.cross_entropy(nchw(x, nchw.sample_path(1.0, twin, gates=False)), y),
        "search iter": lambda: F.cross_entropy(net(x, net.sample_path(1.0, generator, gates=False)), y) + arch_loss(),
        "relaxed": lambda: F.cross_entropy(net(x, net.sample(1.0, generator)), y),
    }, child, choice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--supernets", nargs="+", choices=list(SUPERNETS), default=list(SUPERNETS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = default_space()
    x = torch.randn(args.batch, space.in_channels, space.resolutions[-1], space.resolutions[-1])
    y = torch.randint(0, space.num_classes, (args.batch,))
    print(f"space {space.name} (10^{space.log10_cardinality:.1f} archs), batch {args.batch}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds")
    for name in args.supernets:
        net, nchw = SUPERNETS[name](space), SUPERNETS[name](space)
        variants, child, choice = steps(net, nchw, x, y)
        optimizer = torch.optim.SGD([*net.parameters(), *child.parameters(), *nchw.parameters()], lr=1e-3,
                                    momentum=0.9)

        def timed(step: Callable[[], torch.Tensor]) -> float:
            optimizer.zero_grad(set_to_none=True)
            start = time.perf_counter()
            step().backward()
            optimizer.step()
            return time.perf_counter() - start

        memory = {key: saved_bytes(step) for key, step in variants.items()}  # also the warm-up
        times: dict[str, list[float]] = {key: [] for key in variants}
        for _ in range(args.rounds):
            for key, step in variants.items():
                times[key].append(timed(step))
        ms = {key: 1e3 * statistics.median(t) for key, t in times.items()}
        print(f"\n{name}: widest child {arch_cost(net.arch(choice)).madds / 1e6:.2f}M MAdds")
        print(f"  {'step':<13} {'ms':>9} {'ratio':>7} {'saved MB':>9} {'mem ratio':>9}")
        for key in variants:
            print(f"  {key:<13} {ms[key]:>9.1f} {ms[key] / ms['child']:>7.2f} {memory[key] / 1e6:>9.1f} "
                  f"{memory[key] / memory['child']:>9.2f}")
        print(f"  ratio {name} (sampled single-path weight step / widest child): "
              f"{ms['path sampled'] / ms['child']:.2f}; channels-last speed-up of that step: "
              f"{ms['path NCHW'] / ms['path sampled']:.2f}")


if __name__ == "__main__":
    main()
