"""Space-level genome: widths, depth range and resolutions of a candidate space, and how they change.

The cells of a candidate space come from the per-layer populations; the rest of
the space (each stage's width candidates and minimum depth, the input
resolutions) is its genome here. Every operator keeps the space valid and keeps
the reference architecture representable: its widths, depths and resolution are
never removed.

The resolution gene can follow a fitness (``mutate_genome``'s ``resolution_fitness``:
how much more probable than uniform the searches learned each resolution to be):
it then drops the least fit resolution (only one less fit than uniform) and adds
a neighbour of the fittest, the way cells are replaced by mutants of the best,
instead of a random one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from spaces.arch import Arch
from spaces.space import SearchSpace, StageSpace, cell_of

__all__ = ["Reference", "mutate_genome", "crossover", "WIDTH_STEP"]

WIDTH_STEP = 4  # widths stay multiples of this, as in mobile nets


@dataclass(frozen=True)
class Reference:
    """The reference architecture as positions in a template space: cells per layer, widths, resolution."""

    arch: Arch
    cells: tuple[tuple[str, ...], ...]  # per stage, the cells of its blocks (shorter than the layers = skips)
    widths: tuple[int, ...]
    resolution: int

    @classmethod
    def locate(cls, arch: Arch, template: SearchSpace) -> Reference:
        """Place ``arch`` on the template's layers; ValueError says why it does not fit."""
        if len(arch.stages) != len(template.stages):
            raise ValueError(f"the reference has {len(arch.stages)} stages, the space {len(template.stages)}")
        cells = []
        for s, (ops, stage) in enumerate(zip(arch.stages, template.stages)):
            if len(ops) > len(stage.layers):
                raise ValueError(f"stage {s}: the reference has {len(ops)} blocks, "
                                 f"the space {len(stage.layers)} layers")
            if ops[0].stride != stage.stride:
                raise ValueError(f"stage {s}: the reference's stride {ops[0].stride} differs from {stage.stride}")
            cells.append(tuple(cell_of(op, first=(i == 0)) for i, op in enumerate(ops)))
        return cls(arch, tuple(cells), tuple(ops[-1].cout for ops in arch.stages), arch.input_size)

    def depth(self, stage: int) -> int:
        return len(self.cells[stage])

    def include(self, space: SearchSpace) -> SearchSpace:
        """``space`` widened just enough to hold the reference (width, depth, resolution)."""
        stages = []
        for s, stage in enumerate(space.stages):
            widths = tuple(sorted(set(stage.widths) | {self.widths[s]}))
            layers = tuple(cells if i >= self.depth(s) or self.cells[s][i] in cells else cells + (self.cells[s][i],)
                           for i, cells in enumerate(stage.layers))
            stages.append(replace(stage, widths=widths, layers=layers, min_depth=min(stage.min_depth, self.depth(s))))
        resolutions = tuple(sorted(set(space.resolutions) | {self.resolution}))
        return replace(space, stages=tuple(stages), resolutions=resolutions)


def _mutate_widths(stage: StageSpace, keep: int, rng: random.Random) -> StageSpace:
    widths = list(stage.widths)
    removable = [w for w in widths if w != keep]
    if removable and (len(widths) > 3 or rng.random() < 0.5):
        widths.remove(rng.choice(removable))
    else:
        lo, hi = widths[0], widths[-1]
        candidates = [w for w in range(max(WIDTH_STEP, lo - 2 * WIDTH_STEP), hi + 2 * WIDTH_STEP + 1, WIDTH_STEP)
                      if w not in widths]
        widths.append(rng.choice(candidates))
    return replace(stage, widths=tuple(sorted(widths)))


def mutate_genome(space: SearchSpace, reference: Reference, max_resolution: int, rng: random.Random,
                  resolution_fitness: dict[int, float] | None = None) -> SearchSpace:
    """One random change: a stage's widths (add/drop), its minimum depth (+-1), or the resolution set
    (guided by ``resolution_fitness`` when given: module docstring)."""
    what = rng.choice(("widths", "depth", "resolution"))
    stages = list(space.stages)
    s = rng.randrange(len(stages))
    if what == "widths":
        stages[s] = _mutate_widths(stages[s], reference.widths[s], rng)
    elif what == "depth":
        allowed = [d for d in range(1, reference.depth(s) + 1) if d != stages[s].min_depth]
        if allowed:
            stages[s] = replace(stages[s], min_depth=rng.choice(allowed))
    else:
        space = replace(space, resolutions=_mutate_resolutions(space.resolutions, reference.resolution,
                                                               max_resolution, rng, resolution_fitness))
    return replace(space, stages=tuple(stages))


def _mutate_resolutions(present: tuple[int, ...], keep: int, max_resolution: int, rng: random.Random,
                        fitness: dict[int, float] | None) -> tuple[int, ...]:
    """Drop one resolution (never ``keep``) or add one; with ``fitness``, only a resolution less fit than
    uniform (< 0; unknown ones count as 0) may go, the least fit first, and only a neighbour of the
    fittest may come."""
    resolutions = set(present)
    removable = [r for r in resolutions if r != keep]
    addable = [r for r in range(WIDTH_STEP * 2, max_resolution + 1, WIDTH_STEP) if r not in resolutions]
    if fitness is not None:
        removable = [r for r in removable if fitness.get(r, 0.0) < 0]
        fittest = max(resolutions, key=lambda r: fitness.get(r, 0.0))
        addable = [r for r in (fittest - WIDTH_STEP, fittest + WIDTH_STEP) if r in addable]
    if removable and (not addable or rng.random() < 0.5):
        resolutions.remove(rng.choice(removable) if fitness is None
                           else min(removable, key=lambda r: fitness.get(r, 0.0)))
    elif addable:
        resolutions.add(rng.choice(addable))
    return tuple(sorted(resolutions))


def crossover(a: SearchSpace, b: SearchSpace, rng: random.Random) -> SearchSpace:
    """Per stage, widths and depth range from either parent; resolutions from either."""
    stages = tuple(replace(sa, widths=pick.widths, min_depth=pick.min_depth)
                   for sa, sb in zip(a.stages, b.stages) for pick in [rng.choice((sa, sb))])
    return replace(a, stages=stages, resolutions=rng.choice((a.resolutions, b.resolutions)))
