"""The DenseNAS supernet: densely connected routing blocks of growing widths, chained cost.

Each stage of the space becomes one routing block per candidate width. Block
``(s, j)`` receives every block of the previous stage (dense connections; the
stem for the first stage) through its own shape-alignment layer — the stage's
first, strided layer, itself a mixed op over the first layer's cells — weighted
by path probabilities ``p(i -> j) = softmax_i(beta_s[:, j])``. Inside the block,
the stage's remaining layers are mixed ops with ``skip``, so block depth is
searched; the head reads every last-stage block through ``softmax(beta_head)``.

Chained cost estimation (DenseNAS eq. 6), front to back::

    C(B_sj) = sum_i p(i->j) * (C(B_(s-1)i) + cost(align_ij)) + sum_layers sum_k p_k * cost(op_k)

and the network's expected cost is ``sum_j p(j->head) * (C(B_Sj) + cost(head_j))``.
The architecture is derived by the most probable path (Viterbi over path
probabilities) and the most probable op per layer; op weights are shared by
the blocks of a stage, so the evidence per cell has the same shape as DMasking's.
Block widths are fixed (no masks), so with one-hot weights the supernet
computes exactly the inherited child, and the chained cost is its exact cost.

Searches train it single path: a step draws one route (the head's block, then
each block's incoming block, back to the stem) and runs only the blocks on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from spaces.cost import out_size
from spaces.space import SearchSpace
from spaces.supernet.base import ArchChoice, PathSample, Supernet, gated
from spaces.supernet.expected_latency import SpaceLatency
from spaces.supernet.gumbel import gumbel_softmax, hard_gumbel
from spaces.supernet.layers import SearchLayer
from spaces.supernet.masking import SpatialMasks

__all__ = ["RoutingSample", "DenseNASSupernet"]


@dataclass
class RoutingSample:
    """Relaxed choice: op weights per layer, path probabilities per stage (prev x blocks) and into the head."""

    ops: list[list[torch.Tensor]]
    paths: list[torch.Tensor]
    head_paths: torch.Tensor
    resolution: torch.Tensor


class DenseNASSupernet(Supernet):
    """Routing-block supernet: widths and block counts searched by paths through dense connections."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        self.align = nn.ModuleList()   # align[s][i][j]: previous block i -> block j of stage s
        self.blocks = nn.ModuleList()  # blocks[s][j]: the stage's later layers at width j
        previous: tuple[int, ...] = (space.stem_channels,)
        for stage in space.stages:
            self.align.append(nn.ModuleList(
                nn.ModuleList(SearchLayer(stage.choices(0), (w_in,), w_out, stage.stride, first=True)
                              for w_out in stage.widths) for w_in in previous))
            self.blocks.append(nn.ModuleList(
                nn.ModuleList(SearchLayer(stage.choices(i), (w,), w, 1, first=False)
                              for i in range(1, len(stage.layers))) for w in stage.widths))
            previous = stage.widths
        # The stem is the only input of the first stage's blocks (probability 1), so path
        # logits start at the second stage: its incoming weights pick among the first's blocks.
        self.path_logits = nn.ParameterList(
            nn.Parameter(torch.zeros(len(prev.widths), len(stage.widths)))
            for prev, stage in zip(space.stages, space.stages[1:]))
        self.head_logits = nn.Parameter(torch.zeros(len(space.stages[-1].widths)))

    def width_logits_parameters(self) -> list[nn.Parameter]:
        return [*self.path_logits, self.head_logits]

    def _widths_log_probability(self, widths: tuple[int, ...]) -> torch.Tensor:
        """The route as :meth:`_sample_widths` draws it: the last block from the head's logits, each earlier
        block from the column of path logits into the block after it."""
        head = torch.log_softmax(self.head_logits, 0)[widths[-1]]
        return head + sum(torch.log_softmax(p[:, after], 0)[block]
                          for p, block, after in zip(self.path_logits, widths, widths[1:]))

    def _paths(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        from_stem = torch.ones(1, len(self.space.stages[0].widths))
        return [from_stem, *(torch.softmax(p, 0) for p in self.path_logits)], torch.softmax(self.head_logits, 0)

    def sample(self, tau: float, generator: torch.Generator | None = None) -> RoutingSample:
        """Gumbel weights for ops and resolution; path probabilities are DenseNAS's plain softmax."""
        paths, head = self._paths()
        return RoutingSample(ops=self.sample_ops(tau, generator), paths=paths, head_paths=head,
                             resolution=gumbel_softmax(self.resolution_logits, tau, generator))

    def one_hot(self, choice: ArchChoice) -> RoutingSample:
        paths = [torch.ones(1, len(self.space.stages[0].widths))]
        for p, previous, width in zip(self.path_logits, choice.widths, choice.widths[1:]):
            hot = torch.zeros_like(p)
            hot[previous, width] = 1.0
            paths.append(hot)
        return RoutingSample(ops=self.one_hot_ops(choice), paths=paths,
                             head_paths=self.hot(len(self.head_logits), choice.widths[-1]),
                             resolution=self.hot(len(self.space.resolutions), choice.resolution))

    def mean_sample(self, grad: bool = False) -> RoutingSample:
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            paths, head = self._paths()
            return RoutingSample(ops=[[torch.softmax(p, 0) for p in stage] for stage in self.stage_op_logits()],
                                 paths=paths, head_paths=head, resolution=torch.softmax(self.resolution_logits, 0))

    def _derive_widths(self) -> tuple[int, ...]:
        """Viterbi: the most probable path stem -> one block per stage -> head."""
        with torch.no_grad():
            paths, head = self._paths()
            score = torch.zeros(paths[0].shape[1])  # every first-stage block is fed by the stem
            back: list[torch.Tensor] = []
            for p in paths[1:]:
                total = score[:, None] + torch.log(p)
                score, arg = total.max(0)
                back.append(arg)
            best = int((score + torch.log(head)).argmax())
            widths = [best]
            for arg in reversed(back):
                best = int(arg[best])
                widths.append(best)
            return tuple(reversed(widths))

    def _width_probabilities(self) -> list[list[float]]:
        """Probability of each block lying on the path: flows back from the head through the
        incoming path weights (each block's incoming weights sum to one)."""
        with torch.no_grad():
            paths, head = self._paths()
            flow, marginals = head, [head.tolist()]
            for p in reversed(paths[1:]):
                flow = p @ flow
                marginals.append(flow.tolist())
            return list(reversed(marginals))

    def _cell_module(self, choice: ArchChoice, stage: int, layer: int) -> nn.Module:
        width = choice.widths[stage]
        if layer == 0:
            previous = choice.widths[stage - 1] if stage else 0
            return self.align[stage][previous][width].ops[choice.cells[stage][0]]
        return self.blocks[stage][width][layer - 1].ops[choice.cells[stage][layer]]

    def _search_layers(self) -> Iterator[tuple[str, SearchLayer]]:
        """Alignment layers keyed by the widths they join, block layers by their block's width."""
        previous: tuple[int, ...] = (self.space.stem_channels,)
        for s, stage in enumerate(self.space.stages):
            for i, row in enumerate(self.align[s]):
                for j, layer in enumerate(row):
                    yield f"{s}/0/{previous[i]}>{stage.widths[j]}", layer
            for j, block in enumerate(self.blocks[s]):
                for i, layer in enumerate(block, start=1):
                    yield f"{s}/{i}/{stage.widths[j]}", layer
            previous = stage.widths

    def _sample_widths(self, tau: float, generator: torch.Generator | None,
                       gates: bool) -> tuple[tuple[int, ...], list[torch.Tensor | None]]:
        """A route drawn back from the head: the last block from the head's weights, then each block's
        input from its incoming path weights (a column of the path logits)."""
        block, head_gate = hard_gumbel(self.head_logits, tau, generator, gates)
        blocks, path_gates = [block], []
        for logits in reversed(self.path_logits):
            block, gate = hard_gumbel(logits[:, block], tau, generator, gates)
            blocks.append(block)
            path_gates.append(gate)
        return tuple(reversed(blocks)), [*reversed(path_gates), head_gate]

    def forward_path(self, x: torch.Tensor, path: PathSample) -> torch.Tensor:
        """The blocks on the sampled route only; each path gate scales the alignment layer it chose."""
        x, spatial = self.path_stem(x, path)
        choice, previous = path.choice, 0
        for s, stage in enumerate(self.space.stages):
            block, width = choice.widths[s], stage.widths[choice.widths[s]]
            x = gated(self.align[s][previous][block].run(choice.cells[s][0], x, width), path.op_gates[s][0])
            if s:
                x = gated(x, path.width_gates[s - 1])
            for layer, cell, gate in zip(self.blocks[s][block], choice.cells[s][1:], path.op_gates[s][1:]):
                x = gated(layer.run(cell, x, width), gate)
            previous = block
        return self.path_classify(gated(x, path.width_gates[-1]), spatial)

    def forward_relaxed(self, x: torch.Tensor, sample: RoutingSample) -> torch.Tensor:
        spatial = SpatialMasks(self.space.resolutions, sample.resolution)
        outputs = [self.stem(spatial.mix_input(x), spatial)]
        one = torch.ones(1)
        for s, stage in enumerate(self.space.stages):
            ops = sample.ops[s]
            new_outputs = []
            for j, width in enumerate(stage.widths):
                full = torch.ones(width)
                h = sum(sample.paths[s][i, j] * self.align[s][i][j](prev, ops[0], one, full, spatial)
                        for i, prev in enumerate(outputs))
                for layer, op_weights in zip(self.blocks[s][j], ops[1:]):
                    h = layer(h, op_weights, one, full, spatial)
                new_outputs.append(h)
            outputs = new_outputs
        widest = self.space.stages[-1].widths[-1]
        merged = sum(g * F.pad(h, (0, 0, 0, 0, 0, widest - h.shape[1])) for g, h in zip(sample.head_paths, outputs))
        return self.classify(merged, spatial)

    def expected_cost(self, sample: RoutingSample) -> tuple[torch.Tensor, torch.Tensor]:
        """Chained cost estimation, front to back; differentiable in op, path and resolution weights."""
        spatial = SpatialMasks(self.space.resolutions, sample.resolution)
        last_width = (sample.head_paths * torch.tensor(self.space.stages[-1].widths, dtype=torch.float)).sum()
        fixed_m, fixed_p, size = self.fixed_costs(spatial, last_width)
        chained = [(fixed_m, fixed_p)]  # the stem is the first "block"
        one = torch.ones(1)
        for s, stage in enumerate(self.space.stages):
            hw_in, size_out = spatial.side(size), out_size(size, stage.stride)
            hw_out = spatial.side(size_out)
            blocks = []
            for j, width in enumerate(stage.widths):
                m = p = torch.zeros(())
                for i, (prev_m, prev_p) in enumerate(chained):
                    am, ap = self.align[s][i][j].expected_cost(sample.ops[s][0], one, width, hw_in, hw_out)
                    m, p = m + sample.paths[s][i, j] * (prev_m + am), p + sample.paths[s][i, j] * (prev_p + ap)
                for layer, op_weights in zip(self.blocks[s][j], sample.ops[s][1:]):
                    lm, lp = layer.expected_cost(op_weights, one, width, hw_out, hw_out)
                    m, p = m + lm, p + lp
                blocks.append((m, p))
            chained, size = blocks, size_out
        madds = sum(g * m for g, (m, _) in zip(sample.head_paths, chained))
        params = sum(g * p for g, (_, p) in zip(sample.head_paths, chained))
        return madds, params

    def expected_latency(self, sample: RoutingSample, latency: SpaceLatency) -> torch.Tensor:
        """Chained estimation of the table latency, like :meth:`expected_cost`: a block's latency is the
        path-weighted latency of its inputs plus alignment layers, plus its own layers."""
        res = sample.resolution
        chained = [latency.fixed(res)]
        for s, stage in enumerate(self.space.stages):
            n = len(stage.widths)
            blocks = []
            for j in range(n):
                own = sum((latency.layer(s, i, sample.ops[s][i], self.hot(n, j), res)
                           for i in range(1, len(stage.layers))), torch.zeros(()))
                incoming = sum(sample.paths[s][i, j] * (prev + latency.layer(
                    s, 0, sample.ops[s][0], self.hot(len(chained) * n, i * n + j), res))
                    for i, prev in enumerate(chained))
                blocks.append(incoming + own)
            chained = blocks
        n = len(chained)
        return sum(g * (c + latency.head(self.hot(n, j), res))
                   for j, (g, c) in enumerate(zip(sample.head_paths, chained)))
