"""What both supernets share: fixed stem/head/classifier, op and resolution logits, choice -> arch -> child.

A supernet runs in one of two ways. *Single path* (how searches train):
``sample_path`` draws one discrete architecture with straight-through gates and
``forward`` computes only that child, at its resolution, with sliced weights.
*Relaxed*: ``sample`` draws Gumbel-softmax weights and ``forward`` mixes every
candidate on one max-width, max-resolution map (FBNetV2 masking), which is also
what ``expected_cost``/``expected_latency`` price. ``derive`` turns the logits
into a discrete :class:`ArchChoice`. The search loop only uses this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from spaces.arch import Arch
from spaces.cost import out_size
from spaces.modules import ChildNet
from spaces.space import SKIP, SearchSpace
from spaces.supernet.gumbel import gumbel_softmax, hard_gumbel
from spaces.supernet.expected_latency import SpaceLatency
from spaces.supernet.layers import FixedConvs, SearchLayer, copy_leading, copy_overlap
from spaces.supernet.masking import SpatialMasks, resize_input

__all__ = ["ArchChoice", "PathSample", "Supernet", "gated"]


@dataclass(frozen=True)
class ArchChoice:
    """Discrete choice: cell index per layer per stage, width index per stage, resolution index."""

    cells: tuple[tuple[int, ...], ...]
    widths: tuple[int, ...]
    resolution: int


@dataclass
class PathSample:
    """One discrete architecture for a single-path step, and its straight-through gates.

    ``op_gates[s][l]`` belongs to layer ``l`` of stage ``s``, ``width_gates[s]`` to
    ``width_logits_parameters()[s]`` and ``resolution_gate`` to the resolution logits;
    each is 1 in value (see :func:`spaces.supernet.gumbel.hard_gumbel`). Gates are
    ``None`` when no gradient should reach the logits (weight steps).
    """

    choice: ArchChoice
    op_gates: list[list[torch.Tensor | None]]
    width_gates: list[torch.Tensor | None]
    resolution_gate: torch.Tensor | None

    @classmethod
    def of(cls, choice: ArchChoice) -> PathSample:
        """A given choice without gates (evaluation of one child)."""
        return cls(choice, [[None] * len(cells) for cells in choice.cells], [None] * len(choice.widths), None)


def gated(x: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    """``x * gate``, skipped when there is no gate (its value is 1)."""
    return x if gate is None else x * gate


class Supernet(nn.Module, ABC):
    """Base of the supernets over a :class:`SearchSpace`; architecture logits live beside the weights."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        widest = space.arch([[0] * len(s.layers) for s in space.stages], [len(s.widths) - 1 for s in space.stages],
                            len(space.resolutions) - 1)
        self.stem = FixedConvs(widest.stem)
        self.head = FixedConvs(widest.head)
        self.classifier = nn.Linear(widest.feature_channels, space.num_classes)
        self.op_logits = nn.ParameterList(
            nn.Parameter(torch.zeros(len(stage.choices(i))))
            for stage in space.stages for i in range(len(stage.layers)))
        self.resolution_logits = nn.Parameter(torch.zeros(len(space.resolutions)))

    # ---- what each supernet defines ---------------------------------------------------
    @abstractmethod
    def forward_relaxed(self, x: torch.Tensor, sample: Any) -> torch.Tensor: ...

    @abstractmethod
    def forward_path(self, x: torch.Tensor, path: PathSample) -> torch.Tensor:
        """Only the sampled child's computation, gated; equals :meth:`child`'s output."""

    @abstractmethod
    def _sample_widths(self, tau: float, generator: torch.Generator | None,
                       gates: bool) -> tuple[tuple[int, ...], list[torch.Tensor | None]]: ...

    @abstractmethod
    def _widths_log_probability(self, widths: tuple[int, ...]) -> torch.Tensor:
        """Log-probability of the width (DenseNAS: route) choices under the logits, as sampled."""

    @abstractmethod
    def sample(self, tau: float, generator: torch.Generator | None = None) -> Any: ...

    @abstractmethod
    def one_hot(self, choice: ArchChoice) -> Any: ...

    @abstractmethod
    def mean_sample(self, grad: bool = False) -> Any:
        """The relaxed sample at the logits' softmax (no noise); differentiable in them with ``grad``."""

    @abstractmethod
    def expected_cost(self, sample: Any) -> tuple[torch.Tensor, torch.Tensor]: ...

    @abstractmethod
    def expected_latency(self, sample: Any, latency: SpaceLatency) -> torch.Tensor:
        """Expected ms under ``sample`` from the space's latency grids; differentiable in its weights."""

    @abstractmethod
    def width_logits_parameters(self) -> list[nn.Parameter]: ...

    @abstractmethod
    def _derive_widths(self) -> tuple[int, ...]: ...

    @abstractmethod
    def _width_probabilities(self) -> list[list[float]]: ...

    @abstractmethod
    def _cell_module(self, choice: ArchChoice, stage: int, layer: int) -> nn.Module: ...

    @abstractmethod
    def _search_layers(self) -> Iterator[tuple[str, SearchLayer]]:
        """Every searchable layer with a key naming its place: ``"<stage>/<layer>"`` plus, where one
        place has a module per width (DenseNAS blocks), the widths it joins."""

    # ---- shared -------------------------------------------------------------------------
    def cell_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """The weights of every cell, stem, head and classifier, keyed by place and cell (the weight pool's unit).

        Keys name a cell at a place (``"1/0/ir_k3_e3_relu6"``), not its index in this space,
        so another space offering the same cell at the same place can load them
        (:meth:`load_cell_weights`). Widths need no key of their own in DMasking: sliced
        weights nest every width of a place in one max-width tensor.
        """
        pool = {name: {k: v.detach().clone() for k, v in getattr(self, name).state_dict().items()}
                for name in ("stem", "head", "classifier")}
        for place, layer in self._search_layers():
            for cell, module in zip(layer.cells, layer.ops):
                if cell != SKIP:
                    pool[f"{place}/{cell}"] = {k: v.detach().clone() for k, v in module.state_dict().items()}
        return pool

    def load_cell_weights(self, pool: dict[str, dict[str, torch.Tensor]]) -> int:
        """Start every cell the pool knows from its learned weights (the overlap where widths differ);
        returns how many modules were loaded. Cells the pool lacks keep their fresh initialisation."""
        loaded = 0
        for name in ("stem", "head", "classifier"):
            if name in pool:
                copy_overlap(pool[name], getattr(self, name))
                loaded += 1
        for place, layer in self._search_layers():
            for cell, module in zip(layer.cells, layer.ops):
                if f"{place}/{cell}" in pool:
                    copy_overlap(pool[f"{place}/{cell}"], module)
                    loaded += 1
        return loaded

    def set_cell_logits(self, logits: list[list[list[float]]]) -> None:
        """Start the op logits at ``logits[stage][layer][choice]`` (a prior from cell fitness)."""
        with torch.no_grad():
            for stage, values in zip(self.stage_op_logits(), logits):
                for parameter, layer in zip(stage, values):
                    if len(layer) != len(parameter):
                        raise ValueError(f"{len(layer)} prior logits for a layer of {len(parameter)} choices")
                    parameter.copy_(torch.tensor(layer, dtype=parameter.dtype))

    def forward(self, x: torch.Tensor, sample: Any) -> torch.Tensor:
        """Single path for a :class:`PathSample`, the relaxed mixture otherwise."""
        return self.forward_path(x, sample) if isinstance(sample, PathSample) else self.forward_relaxed(x, sample)

    def log_probability(self, choice: ArchChoice) -> torch.Tensor:
        """``log P_theta(choice)``, differentiable in the logits (the score-function estimator's term)."""
        ops = sum(torch.log_softmax(p, 0)[i] for stage, cells in zip(self.stage_op_logits(), choice.cells)
                  for p, i in zip(stage, cells))
        return ops + self._widths_log_probability(choice.widths) + \
            torch.log_softmax(self.resolution_logits, 0)[choice.resolution]

    def sample_path(self, tau: float, generator: torch.Generator | None = None, gates: bool = True,
                    uniform_resolution: bool = False) -> PathSample:
        """One architecture drawn from the logits' distribution; with ``gates``, differentiable in them.

        ``uniform_resolution`` draws the resolution uniformly (from the same noise), the rest as learned.
        """
        ops = [[hard_gumbel(p, tau, generator, gates) for p in stage] for stage in self.stage_op_logits()]
        widths, width_gates = self._sample_widths(tau, generator, gates)
        logits = torch.zeros_like(self.resolution_logits) if uniform_resolution else self.resolution_logits
        resolution, resolution_gate = hard_gumbel(logits, tau, generator, gates)
        choice = ArchChoice(cells=tuple(tuple(i for i, _ in stage) for stage in ops), widths=widths,
                            resolution=resolution)
        return PathSample(choice, [[g for _, g in stage] for stage in ops], width_gates, resolution_gate)

    def path_stem(self, x: torch.Tensor, path: PathSample) -> tuple[torch.Tensor, SpatialMasks]:
        """The input at the sampled resolution (gated) through the stem; no spatial masks are needed."""
        size = self.space.resolutions[path.choice.resolution]
        spatial = SpatialMasks([size], torch.ones(1))
        return self.stem(gated(resize_input(x, size), path.resolution_gate), spatial), spatial

    def path_classify(self, x: torch.Tensor, spatial: SpatialMasks) -> torch.Tensor:
        """Head and classifier on the last stage's output, zero-padded to the widest (exact: zeros add nothing)."""
        widest = self.space.stages[-1].widths[-1]
        return self.classify(nn.functional.pad(x, (0, 0, 0, 0, 0, widest - x.shape[1])), spatial)
    def arch_parameters(self) -> list[nn.Parameter]:
        return [*self.op_logits, *self.width_logits_parameters(), self.resolution_logits]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def stage_op_logits(self) -> list[list[nn.Parameter]]:
        it = iter(self.op_logits)
        return [[next(it) for _ in stage.layers] for stage in self.space.stages]

    def sample_ops(self, tau: float, generator: torch.Generator | None) -> list[list[torch.Tensor]]:
        return [[gumbel_softmax(p, tau, generator) for p in stage] for stage in self.stage_op_logits()]

    def hot(self, n: int, i: int) -> torch.Tensor:
        return nn.functional.one_hot(torch.tensor(i), n).float()

    def one_hot_ops(self, choice: ArchChoice) -> list[list[torch.Tensor]]:
        return [[self.hot(len(p), c) for p, c in zip(stage, cells)]
                for stage, cells in zip(self.stage_op_logits(), choice.cells)]

    def derive(self) -> ArchChoice:
        """The most probable choice."""
        return ArchChoice(cells=tuple(tuple(int(p.argmax()) for p in stage) for stage in self.stage_op_logits()),
                          widths=self._derive_widths(), resolution=int(self.resolution_logits.argmax()))

    def probabilities(self) -> dict[str, Any]:
        """Per-cell softmax evidence (what AutoSpace scores cells by), width marginals, resolution."""
        with torch.no_grad():
            return {"cells": [[torch.softmax(p, 0).tolist() for p in stage] for stage in self.stage_op_logits()],
                    "widths": self._width_probabilities(),
                    "resolution": torch.softmax(self.resolution_logits, 0).tolist()}

    def arch(self, choice: ArchChoice) -> Arch:
        return self.space.arch([list(c) for c in choice.cells], list(choice.widths), choice.resolution)

    def classify(self, x: torch.Tensor, spatial: SpatialMasks) -> torch.Tensor:
        """Head convs, global pooling over the chosen region, classifier."""
        return self.classifier(torch.flatten(self.head(x, spatial, pool=True), 1))

    def fixed_costs(self, spatial: SpatialMasks, last_width: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Expected (MAdds, params) of stem + head + classifier, and the stem's output size."""
        stem_m, stem_p, size = self.stem.expected_cost(self.space.in_channels, spatial.max, spatial, spatial.side)
        head_m, head_p, _ = self.head.expected_cost(last_width, self.stage_output_size(spatial.max), spatial,
                                                    spatial.side)
        features = self.head.specs[-1].cout if self.head.specs else last_width
        classes = self.space.num_classes
        return stem_m + head_m + features * classes, stem_p + head_p + features * classes + classes, size

    def stage_output_size(self, size: int) -> int:
        """Side of the last stage's output on the max grid (head convs run there)."""
        for op in self.stem.specs:
            size = out_size(size, op.stride)
        for stage in self.space.stages:
            size = out_size(size, stage.stride)
        return size

    def child(self, choice: ArchChoice) -> ChildNet:
        """The child network of ``choice`` with weights inherited from the supernet (leading slices)."""
        net = ChildNet(self.arch(choice))
        self.stem.copy_into(net.stem)
        blocks = iter(net.blocks)
        for s, stage in enumerate(self.space.stages):
            for i in range(len(stage.layers)):
                if stage.choices(i)[choice.cells[s][i]] != SKIP:
                    copy_leading(self._cell_module(choice, s, i), next(blocks))
        self.head.copy_into(net.head, net.pooled_head)
        copy_leading(self.classifier, net.classifier)
        return net

