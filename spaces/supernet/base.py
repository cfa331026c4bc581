"""What both supernets share: fixed stem/head/classifier, op and resolution logits, choice -> arch -> child.

A supernet samples relaxed choices (``sample``), runs them (``forward``), prices
them (``expected_cost``, ``expected_latency``), and turns its logits into a discrete
:class:`ArchChoice` (``derive``). The search loop only uses this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from spaces.arch import Arch
from spaces.cost import out_size
from spaces.modules import ChildNet
from spaces.space import SKIP, SearchSpace
from spaces.supernet.gumbel import gumbel_softmax
from spaces.supernet.expected_latency import SpaceLatency
from spaces.supernet.layers import FixedConvs, copy_leading
from spaces.supernet.masking import SpatialMasks

__all__ = ["ArchChoice", "Supernet"]


@dataclass(frozen=True)
class ArchChoice:
    """Discrete choice: cell index per layer per stage, width index per stage, resolution index."""

    cells: tuple[tuple[int, ...], ...]
    widths: tuple[int, ...]
    resolution: int


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
            nn.Parameter(torch.zeros(len(stage.choices(i)))) for stage in space.stages for i in range(len(stage.layers)))
        self.resolution_logits = nn.Parameter(torch.zeros(len(space.resolutions)))

    # ---- what each supernet defines ---------------------------------------------------
    @abstractmethod
    def forward(self, x: torch.Tensor, sample: Any) -> torch.Tensor: ...

    @abstractmethod
    def sample(self, tau: float, generator: torch.Generator | None = None) -> Any: ...

    @abstractmethod
    def one_hot(self, choice: ArchChoice) -> Any: ...

    @abstractmethod
    def mean_sample(self) -> Any: ...

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

    # ---- shared -------------------------------------------------------------------------
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

