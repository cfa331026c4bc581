"""The DMasking supernet: DNAS mixed ops per layer, FBNetV2 masking for widths and resolution.

Every layer holds one module per candidate cell, built by the child-network
builder at the stage's largest width; a layer's output is the Gumbel-weighted
sum of its cells (``skip`` included past ``min_depth``, so depth is searched).
Widths are not separate branches: each stage multiplies its one max-width map
by a mixture of channel masks, and each cell masks its expanded (mid) and SE
channels to what they would be at the sampled input width. So a one-hot
sample computes exactly the child network that :meth:`DMaskingSupernet.child`
builds with inherited weights, and :meth:`expected_cost` — the effective-shape
propagation of expected widths layer to layer — equals that child's exact cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from spaces.arch import Arch
from spaces.cost import Cost, conv_cost, mbconv_cost, out_size
from spaces.modules import ChildNet, MBConv, build_op
from spaces.ops import ConvOp, MBConvOp, SkipOp
from spaces.space import SKIP, SearchSpace, cell_op
from spaces.supernet.gumbel import gumbel_softmax
from spaces.supernet.masking import SpatialMasks, channel_mask

__all__ = ["ArchChoice", "ArchSample", "DMaskingSupernet"]


@dataclass(frozen=True)
class ArchChoice:
    """Discrete choice: cell index per layer per stage, width index per stage, resolution index."""

    cells: tuple[tuple[int, ...], ...]
    widths: tuple[int, ...]
    resolution: int


@dataclass
class ArchSample:
    """Relaxed choice for one step: op weights per layer, width weights per stage, resolution weights."""

    ops: list[list[torch.Tensor]]
    widths: list[torch.Tensor]
    resolution: torch.Tensor


class _SearchLayer(nn.Module):
    """One searchable layer: a max-width module per cell, with each cell's mid/SE widths per input width."""

    def __init__(self, cells: tuple[str, ...], in_widths: tuple[int, ...], out_width: int, stride: int,
                 first: bool) -> None:
        super().__init__()
        self.cells = cells
        self.stride = stride
        self.ops = nn.ModuleList(
            nn.Identity() if cell == SKIP else build_op(cell_op(cell, in_widths[-1], out_width, stride, first))
            for cell in cells)
        # Per cell, the spec of the op at every input width (out width does not change mid or SE).
        self.specs = [[None if cell == SKIP else cell_op(cell, w, out_width, stride, first) for w in in_widths]
                      for cell in cells]

    def forward(self, x: torch.Tensor, op_weights: torch.Tensor, in_weights: torch.Tensor,
                out_mask: torch.Tensor, spatial: SpatialMasks) -> torch.Tensor:
        total = 0
        for k, (module, specs) in enumerate(zip(self.ops, self.specs)):
            if specs[0] is None:  # skip: the input is already masked to this stage's width
                total = total + op_weights[k] * x
                continue
            total = total + op_weights[k] * self._cell_forward(module, specs, x, in_weights, out_mask, spatial)
        return total

    @staticmethod
    def _cell_forward(block: MBConv, specs: list[MBConvOp], x: torch.Tensor, in_weights: torch.Tensor,
                      out_mask: torch.Tensor, spatial: SpatialMasks) -> torch.Tensor:
        mid_mask = channel_mask([s.mid for s in specs], in_weights, specs[-1].mid)[None, :, None, None]
        h = spatial.mask(block.pw(x)) * mid_mask if specs[0].has_pw else x
        h = spatial.mask(block.dw(h)) * mid_mask
        if specs[0].se is not None:
            se = block.se
            reduced_mask = channel_mask([s.se.reduced for s in specs], in_weights, specs[-1].se.reduced)
            squeezed = se.act(se.reduce(spatial.pool(h))) * reduced_mask[None, :, None, None]
            h = h * se.gate(se.expand(squeezed))
        out = spatial.mask(block.pwl(h)) * out_mask[None, :, None, None]
        return out + x if block.residual else out


class DMaskingSupernet(nn.Module):
    """Supernet of a :class:`SearchSpace`; architecture logits live beside the network weights."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        skeleton = space.arch([[0] * len(s.layers) for s in space.stages], [len(s.widths) - 1 for s in space.stages],
                              len(space.resolutions) - 1)
        self.stem_ops = skeleton.stem
        self.stem = nn.Sequential(*(build_op(op) for op in skeleton.stem))
        self.layers = nn.ModuleList()
        self.in_widths: list[tuple[int, ...]] = []  # candidate input widths of each stage
        widths: tuple[int, ...] = (space.stem_channels,)
        for stage in space.stages:
            self.in_widths.append(widths)
            layers = nn.ModuleList()
            for i in range(len(stage.layers)):
                layer_in = widths if i == 0 else stage.widths
                layers.append(_SearchLayer(stage.choices(i), layer_in, stage.widths[-1],
                                           stage.stride if i == 0 else 1, first=(i == 0)))
            self.layers.append(layers)
            widths = stage.widths
        self.head_ops = skeleton.head
        self.head = nn.ModuleList(build_op(op) for op in skeleton.head)
        self.classifier = nn.Linear(skeleton.feature_channels, space.num_classes)
        self.op_logits = nn.ParameterList(
            nn.Parameter(torch.zeros(len(stage.choices(i)))) for stage in space.stages
            for i in range(len(stage.layers)))
        self.width_logits = nn.ParameterList(nn.Parameter(torch.zeros(len(s.widths))) for s in space.stages)
        self.resolution_logits = nn.Parameter(torch.zeros(len(space.resolutions)))

    # ---- parameters ----------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [*self.op_logits, *self.width_logits, self.resolution_logits]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def _stage_logits(self) -> list[list[nn.Parameter]]:
        it = iter(self.op_logits)
        return [[next(it) for _ in stage.layers] for stage in self.space.stages]

    # ---- samples ---------------------------------------------------------------------
    def sample(self, tau: float, generator: torch.Generator | None = None) -> ArchSample:
        """Gumbel-softmax weights for one step (a shared seeded generator keeps ranks identical)."""
        return ArchSample(
            ops=[[gumbel_softmax(p, tau, generator) for p in stage] for stage in self._stage_logits()],
            widths=[gumbel_softmax(p, tau, generator) for p in self.width_logits],
            resolution=gumbel_softmax(self.resolution_logits, tau, generator))

    def one_hot(self, choice: ArchChoice) -> ArchSample:
        """The sample that selects exactly ``choice``."""
        def hot(n: int, i: int) -> torch.Tensor:
            return nn.functional.one_hot(torch.tensor(i), n).float()

        return ArchSample(
            ops=[[hot(len(p), c) for p, c in zip(stage, cells)] for stage, cells in
                 zip(self._stage_logits(), choice.cells)],
            widths=[hot(len(p), w) for p, w in zip(self.width_logits, choice.widths)],
            resolution=hot(len(self.space.resolutions), choice.resolution))

    def mean_sample(self) -> ArchSample:
        """The noiseless relaxed sample, softmax of the logits: what expected costs are reported at."""
        def probs(p: torch.Tensor) -> torch.Tensor:
            return torch.softmax(p.detach(), 0)

        return ArchSample(ops=[[probs(p) for p in stage] for stage in self._stage_logits()],
                          widths=[probs(p) for p in self.width_logits], resolution=probs(self.resolution_logits))

    def probabilities(self) -> dict[str, list[list[float]] | list[float]]:
        """Softmax of every architecture logit: the per-cell evidence AutoSpace scores cells by."""
        with torch.no_grad():
            return {
                "cells": [[torch.softmax(p, 0).tolist() for p in stage] for stage in self._stage_logits()],
                "widths": [torch.softmax(p, 0).tolist() for p in self.width_logits],
                "resolution": torch.softmax(self.resolution_logits, 0).tolist(),
            }

    def derive(self) -> ArchChoice:
        """The most probable choice (argmax of each logit vector)."""
        return ArchChoice(
            cells=tuple(tuple(int(p.argmax()) for p in stage) for stage in self._stage_logits()),
            widths=tuple(int(p.argmax()) for p in self.width_logits),
            resolution=int(self.resolution_logits.argmax()))

    def arch(self, choice: ArchChoice) -> Arch:
        return self.space.arch([list(c) for c in choice.cells], list(choice.widths), choice.resolution)

    # ---- forward and cost --------------------------------------------------------------
    def forward(self, x: torch.Tensor, sample: ArchSample) -> torch.Tensor:
        spatial = SpatialMasks(self.space.resolutions, sample.resolution)
        x = spatial.mix_input(x)
        for module in self.stem:
            x = spatial.mask(module(x))
        in_weights = torch.ones(1)
        for s, (stage, layers) in enumerate(zip(self.space.stages, self.layers)):
            out_mask = channel_mask(stage.widths, sample.widths[s], stage.widths[-1])
            for i, layer in enumerate(layers):
                x = layer(x, sample.ops[s][i], in_weights if i == 0 else sample.widths[s], out_mask, spatial)
            in_weights = sample.widths[s]
        pooled = False
        for op, module in zip(self.head_ops, self.head):
            if op.after_pool and not pooled:
                x, pooled = spatial.pool(x), True
            x = module(x) if pooled else spatial.mask(module(x))
        if not pooled:
            x = spatial.pool(x)
        return self.classifier(torch.flatten(x, 1))

    def expected_cost(self, sample: ArchSample) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected (MAdds, params), differentiable in every weight of ``sample``.

        Effective shape propagation: each layer's expected input width is the previous
        stage's expected width, so the cost depends on both sides' choices.
        """
        spatial = SpatialMasks(self.space.resolutions, sample.resolution)
        size = spatial.max
        madds = params = torch.zeros(())
        for op in self.stem_ops:
            size = out_size(size, op.stride)
            m, p = conv_cost(op.cin, op.cout, op.k, spatial.side(size), op.groups, op.bias, op.bn)
            madds, params = madds + m, params + p
        in_weights = torch.ones(1)
        for s, (stage, layers) in enumerate(zip(self.space.stages, self.layers)):
            width = (sample.widths[s] * torch.tensor(stage.widths, dtype=torch.float)).sum()
            for i, layer in enumerate(layers):
                weights = in_weights if i == 0 else sample.widths[s]
                hw_in, size = spatial.side(size), out_size(size, layer.stride)
                for k, specs in enumerate(layer.specs):
                    if specs[0] is None:
                        continue
                    expect = lambda values: (weights * torch.tensor(values, dtype=torch.float)).sum()  # noqa: E731
                    m, p = mbconv_cost(expect([sp.cin for sp in specs]), expect([sp.mid for sp in specs]), width,
                                       specs[0].k, hw_in, spatial.side(size), has_pw=specs[0].has_pw,
                                       se_reduced=expect([sp.se.reduced for sp in specs]) if specs[0].se else None,
                                       bias=specs[0].bias)
                    madds, params = madds + sample.ops[s][i][k] * m, params + sample.ops[s][i][k] * p
            in_weights = sample.widths[s]
        channels = (in_weights * torch.tensor(self.space.stages[-1].widths, dtype=torch.float)).sum()
        for op in self.head_ops:
            m, p = conv_cost(channels, op.cout, op.k, 1 if op.after_pool else spatial.side(size), op.groups,
                             op.bias, op.bn)
            madds, params, channels = madds + m, params + p, op.cout
        classes = self.space.num_classes
        return madds + channels * classes, params + channels * classes + classes

    # ---- the child ---------------------------------------------------------------------
    def child(self, choice: ArchChoice) -> ChildNet:
        """The child network of ``choice`` with weights inherited from the supernet (leading slices)."""
        arch = self.arch(choice)
        net = ChildNet(arch)
        _copy_leading(self.stem, net.stem)
        blocks = iter(net.blocks)
        for s, layers in enumerate(self.layers):
            for i, layer in enumerate(layers):
                k = choice.cells[s][i]
                if layer.cells[k] != SKIP:
                    _copy_leading(layer.ops[k], next(blocks))
        _copy_leading(nn.Sequential(*(m for op, m in zip(self.head_ops, self.head) if not op.after_pool)), net.head)
        _copy_leading(nn.Sequential(*(m for op, m in zip(self.head_ops, self.head) if op.after_pool)),
                      net.pooled_head)
        _copy_leading(self.classifier, net.classifier)
        return net


def _copy_leading(source: nn.Module, target: nn.Module) -> None:
    """Copy each tensor's leading slice: masks select the first channels, so this is the child."""
    source_state = source.state_dict()
    with torch.no_grad():
        for name, tensor in target.state_dict().items():
            src = source_state[name]
            if tensor.dim() == 0:
                tensor.copy_(src)
            else:
                tensor.copy_(src[tuple(slice(0, d) for d in tensor.shape)])
