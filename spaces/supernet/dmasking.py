"""The DMasking supernet: DNAS mixed ops per layer, FBNetV2 masking for widths and resolution.

Searches train it single path: a step runs one sampled child, its widths by
weight slicing (:mod:`spaces.supernet.slicing`), at its own resolution. The
relaxed mixture below is how it is priced and how widths relate to each other.

Widths are not separate branches: each stage's layers run at the stage's
largest width and one mixture of channel masks (``sum_i g_i mask_i``) selects
the width, so memory and compute stay nearly constant as width options grow.
Each cell masks its mid and SE channels to the sampled input width. So a
one-hot sample computes exactly the child network that :meth:`Supernet.child`
builds with inherited weights, and :meth:`DMaskingSupernet.expected_cost` —
effective shape propagation of expected widths layer to layer — equals that
child's exact cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from spaces.cost import out_size
from spaces.space import SearchSpace
from spaces.supernet.base import ArchChoice, PathSample, Supernet, gated
from spaces.supernet.expected_latency import SpaceLatency
from spaces.supernet.gumbel import gumbel_softmax, hard_gumbel
from spaces.supernet.layers import SearchLayer, expectation
from spaces.supernet.masking import SpatialMasks, channel_mask

__all__ = ["ArchSample", "DMaskingSupernet"]


@dataclass
class ArchSample:
    """Relaxed choice for one step: op weights per layer, width weights per stage, resolution weights."""

    ops: list[list[torch.Tensor]]
    widths: list[torch.Tensor]
    resolution: torch.Tensor


class DMaskingSupernet(Supernet):
    """Supernet whose width choice per stage is a channel-mask mixture over one feature map."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        self.layers = nn.ModuleList()
        widths: tuple[int, ...] = (space.stem_channels,)
        for stage in space.stages:
            self.layers.append(nn.ModuleList(
                SearchLayer(stage.choices(i), widths if i == 0 else stage.widths, stage.widths[-1],
                            stage.stride if i == 0 else 1, first=(i == 0)) for i in range(len(stage.layers))))
            widths = stage.widths
        self.width_logits = nn.ParameterList(nn.Parameter(torch.zeros(len(s.widths))) for s in space.stages)

    def width_logits_parameters(self) -> list[nn.Parameter]:
        return list(self.width_logits)

    def _widths_log_probability(self, widths: tuple[int, ...]) -> torch.Tensor:
        return sum(torch.log_softmax(p, 0)[w] for p, w in zip(self.width_logits, widths))

    def sample(self, tau: float, generator: torch.Generator | None = None) -> ArchSample:
        """Gumbel-softmax weights for one step (a shared seeded generator keeps ranks identical)."""
        return ArchSample(ops=self.sample_ops(tau, generator),
                          widths=[gumbel_softmax(p, tau, generator) for p in self.width_logits],
                          resolution=gumbel_softmax(self.resolution_logits, tau, generator))

    def one_hot(self, choice: ArchChoice) -> ArchSample:
        return ArchSample(ops=self.one_hot_ops(choice),
                          widths=[self.hot(len(p), w) for p, w in zip(self.width_logits, choice.widths)],
                          resolution=self.hot(len(self.space.resolutions), choice.resolution))

    def mean_sample(self, grad: bool = False) -> ArchSample:
        """The noiseless relaxed sample (softmax of the logits): expected costs are reported at it, and
        single-path searches penalise them (with ``grad``)."""
        def probs(p: torch.Tensor) -> torch.Tensor:
            return torch.softmax(p if grad else p.detach(), 0)

        return ArchSample(ops=[[probs(p) for p in stage] for stage in self.stage_op_logits()],
                          widths=[probs(p) for p in self.width_logits], resolution=probs(self.resolution_logits))

    def _derive_widths(self) -> tuple[int, ...]:
        return tuple(int(p.argmax()) for p in self.width_logits)

    def _width_probabilities(self) -> list[list[float]]:
        return [torch.softmax(p, 0).tolist() for p in self.width_logits]

    def _cell_module(self, choice: ArchChoice, stage: int, layer: int) -> nn.Module:
        return self.layers[stage][layer].ops[choice.cells[stage][layer]]

    def _search_layers(self) -> Iterator[tuple[str, SearchLayer]]:
        for s, layers in enumerate(self.layers):
            for i, layer in enumerate(layers):
                yield f"{s}/{i}", layer

    def _sample_widths(self, tau: float, generator: torch.Generator | None,
                       gates: bool) -> tuple[tuple[int, ...], list[torch.Tensor | None]]:
        drawn = [hard_gumbel(p, tau, generator, gates) for p in self.width_logits]
        return tuple(i for i, _ in drawn), [g for _, g in drawn]

    def forward_path(self, x: torch.Tensor, path: PathSample) -> torch.Tensor:
        """The sampled child: each layer's sampled cell sliced to its stage's sampled width; the width gate
        scales the stage's first output, each op gate its layer's output."""
        x, spatial = self.path_stem(x, path)
        choice = path.choice
        for s, (stage, layers) in enumerate(zip(self.space.stages, self.layers)):
            width = stage.widths[choice.widths[s]]
            for i, layer in enumerate(layers):
                x = gated(layer.run(choice.cells[s][i], x, width), path.op_gates[s][i])
                if i == 0:
                    x = gated(x, path.width_gates[s])
        return self.path_classify(x, spatial)

    def forward_relaxed(self, x: torch.Tensor, sample: ArchSample) -> torch.Tensor:
        spatial = SpatialMasks(self.space.resolutions, sample.resolution)
        x = self.stem(spatial.mix_input(x), spatial)
        in_weights = torch.ones(1)
        for s, (stage, layers) in enumerate(zip(self.space.stages, self.layers)):
            out_mask = channel_mask(stage.widths, sample.widths[s], stage.widths[-1])
            for i, layer in enumerate(layers):
                x = layer(x, sample.ops[s][i], in_weights if i == 0 else sample.widths[s], out_mask, spatial)
            in_weights = sample.widths[s]
        return self.classify(x, spatial)

    def expected_cost(self, sample: ArchSample) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected (MAdds, params), differentiable in every weight of ``sample``.

        Effective shape propagation: a stage's first layer sees the previous stage's
        expected width, so each layer's cost depends on both sides' choices.
        """
        spatial = SpatialMasks(self.space.resolutions, sample.resolution)
        last_width = expectation(sample.widths[-1], list(self.space.stages[-1].widths))
        madds, params, size = self.fixed_costs(spatial, last_width)
        in_weights = torch.ones(1)
        for s, (stage, layers) in enumerate(zip(self.space.stages, self.layers)):
            width = expectation(sample.widths[s], list(stage.widths))
            for i, layer in enumerate(layers):
                hw_in, size = spatial.side(size), out_size(size, layer.stride)
                m, p = layer.expected_cost(sample.ops[s][i], in_weights if i == 0 else sample.widths[s], width,
                                           hw_in, spatial.side(size))
                madds, params = madds + m, params + p
            in_weights = sample.widths[s]
        return madds, params

    def expected_latency(self, sample: ArchSample, latency: SpaceLatency) -> torch.Tensor:
        """Table latency in expectation: a stage's first layer over (previous width, width) pairs, later
        layers over the stage's width, every layer over the resolution."""
        res = sample.resolution
        total = latency.fixed(res)
        previous = torch.ones(1)
        for s, stage in enumerate(self.space.stages):
            widths = sample.widths[s]
            for i in range(len(stage.layers)):
                pairs = torch.outer(previous, widths).flatten() if i == 0 else widths
                total = total + latency.layer(s, i, sample.ops[s][i], pairs, res)
            previous = widths
        return total + latency.head(previous, res)
