"""Expected latency of a relaxed architecture choice, from a per-op lookup table.

FBNet's differentiable latency is ``sum_k g_k * LAT(op_k)`` per layer. Here a
layer's op also depends on the stage widths on either side, and its table
entry on the input side at the chosen resolution, so each searchable layer gets
a *grid* of table latencies over (cell, width pair, resolution), looked up once
when the search starts. A layer's expected latency is its grid contracted with
the relaxed weights of those choices::

    E[LAT_layer] = sum_k sum_p sum_r  g_k * w_p * rho_r * LAT[k, p, r]

Width pairs are (input width, output width): every (previous stage, this
stage) pair for a stage's first layer, the diagonal (w, w) for its later layers
(they share the stage's width choice). Stem, pooling and classifier depend on
the resolution (and, for the head, the last stage's width) only. The choice
groups are sampled independently, so the sum over layers is the exact
expectation of :meth:`LatencyTable.predict` under the relaxed distribution;
with one-hot weights it *is* ``predict`` of the derived architecture (tested).

:func:`space_latency_keys` lists every entry a space's members can need, so a
table can be measured up front, once, on the serving runtime — the search
itself never times anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import torch

from spaces.arch import Arch
from spaces.cost import out_size
from spaces.latency import LatencyKey, LatencyTable, arch_keys, op_key
from spaces.space import SKIP, SearchSpace, cell_op

__all__ = ["SpaceLatency", "space_latency_keys", "width_pairs"]

# Per layer: [cell][width pair][resolution] -> its table key, None for skip (costs nothing).
_LayerKeys = list[list[list[LatencyKey | None]]]


def width_pairs(space: SearchSpace, stage: int, layer: int) -> list[tuple[int, int]]:
    """The (input, output) width pairs of a layer, in grid order (row-major over previous x this stage)."""
    widths = space.stages[stage].widths
    if layer > 0:
        return [(w, w) for w in widths]
    previous = space.stages[stage - 1].widths if stage else (space.stem_channels,)
    return list(product(previous, widths))


def _representative(space: SearchSpace, last_width: int, resolution: int) -> Arch:
    """A member with the given last-stage width and resolution: its stem and tail entries are every member's."""
    widths = [0] * (len(space.stages) - 1) + [last_width]
    return space.arch([[0] * len(s.layers) for s in space.stages], widths, resolution)


@dataclass(frozen=True)
class _SpaceKeys:
    """Every table key of a space, arranged as the expectation needs them."""

    stem: list[list[LatencyKey]]            # [resolution] -> stem convs
    layers: list[list[_LayerKeys]]          # [stage][layer] -> [cell][pair][resolution]
    tail: list[list[list[LatencyKey]]]      # [last width][resolution] -> head convs, pooling, classifier

    @classmethod
    def of(cls, space: SearchSpace) -> _SpaceKeys:
        resolutions = range(len(space.resolutions))
        stem, tail = [], []
        stage_sizes: list[list[int]] = []  # [resolution][stage] -> the stage's input side
        for r in resolutions:
            arch = _representative(space, 0, r)
            keys = arch_keys(arch)
            stem.append(keys[:len(arch.stem)])
            size = arch.input_size
            for op in arch.stem:
                size = out_size(size, op.stride)
            sizes = []
            for stage in space.stages:
                sizes.append(size)
                size = out_size(size, stage.stride)
            stage_sizes.append(sizes)
        for b in range(len(space.stages[-1].widths)):
            row = []
            for r in resolutions:
                arch = _representative(space, b, r)
                row.append(arch_keys(arch)[len(arch.stem) + len(arch.blocks):])
            tail.append(row)
        layers = []
        for s, stage in enumerate(space.stages):
            stage_keys = []
            for i in range(len(stage.layers)):
                stride = stage.stride if i == 0 else 1
                grid = []
                for cell in stage.choices(i):
                    grid.append([[None if cell == SKIP else op_key(
                        cell_op(cell, w_in, w_out, stride, first=(i == 0)),
                        sizes[s] if i == 0 else out_size(sizes[s], stage.stride))
                        for sizes in stage_sizes] for w_in, w_out in width_pairs(space, s, i)])
                stage_keys.append(grid)
            layers.append(stage_keys)
        return cls(stem, layers, tail)

    def all(self) -> list[LatencyKey]:
        keys = [k for row in self.stem for k in row]
        keys += [k for stage in self.layers for grid in stage for cell in grid for pair in cell for k in pair
                 if k is not None]
        keys += [k for row in self.tail for cell in row for k in cell]
        return list(dict.fromkeys(keys))


def space_latency_keys(space: SearchSpace) -> list[LatencyKey]:
    """Every table entry any member of ``space`` can need (measure them with ``table.ensure_keys``)."""
    return _SpaceKeys.of(space).all()


class SpaceLatency:
    """A space's latency grids (ms) looked up in one table; contracting them with weights is differentiable.

    Raises:
        MissingLatencyError: the table lacks an entry; measure ``space_latency_keys(space)`` first.
    """

    def __init__(self, space: SearchSpace, table: LatencyTable) -> None:
        keys = _SpaceKeys.of(space)

        def total(row: list[LatencyKey | None]) -> float:
            return sum(table.entry(k) for k in row if k is not None)

        self.overhead = table.overhead_ms
        self.stem = torch.tensor([total(row) for row in keys.stem])
        self.tail = torch.tensor([[total(cell) for cell in row] for row in keys.tail])
        self.layers = [[torch.tensor([[[table.entry(k) if k is not None else 0.0 for k in pair] for pair in cell]
                                      for cell in grid])
                        for grid in stage] for stage in keys.layers]

    def fixed(self, resolution: torch.Tensor) -> torch.Tensor:
        """Expected ms of the per-call overhead and the stem."""
        return self.overhead + self.stem @ resolution

    def layer(self, stage: int, layer: int, ops: torch.Tensor, pairs: torch.Tensor,
              resolution: torch.Tensor) -> torch.Tensor:
        """Expected ms of one layer under op weights, width-pair weights (grid order) and resolution weights."""
        return torch.einsum("k,p,r,kpr->", ops, pairs, resolution, self.layers[stage][layer])

    def head(self, last_widths: torch.Tensor, resolution: torch.Tensor) -> torch.Tensor:
        """Expected ms of head convs, pooling and classifier given the last stage's width weights."""
        return torch.einsum("b,r,br->", last_widths, resolution, self.tail)
