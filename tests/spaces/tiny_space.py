"""A tiny search space and learnable synthetic data shared by supernet and search tests."""

from __future__ import annotations

import itertools

import torch

from spaces.search import SearchData
from spaces.space import SearchSpace
from spaces.supernet import ArchChoice, Supernet

TINY_SPACE = {
    "format": "autospace-space/1", "name": "tiny", "in_channels": 1, "num_classes": 4, "resolutions": [8, 12],
    "stem": ["cn_k3_c8_relu"], "head": ["cn_k1_c32_relu"],
    "stages": [
        {"widths": [8, 12], "stride": 1, "min_depth": 1,
         "layers": [["ds_k3_relu", "ir_k3_e3_se0.25_hswish"], ["ir_k3_e2_relu", "ir_k5_e3_relu6"]]},
        {"widths": [12, 16, 24], "stride": 2, "min_depth": 1,
         "layers": [["ir_k3_e3_relu", "ir_k5_e2_swish"], ["ir_k3_e3_relu", "ds_k5_se0.5_relu"]]},
    ],
}


def tiny_space() -> SearchSpace:
    return SearchSpace.from_dict(TINY_SPACE)


def quadrant_data(n_train: int = 128, n_val: int = 64, size: int = 12, seed: int = 0) -> SearchData:
    """Class = which quadrant is bright: learnable in a few steps, so searches are meaningful."""
    generator = torch.Generator().manual_seed(seed)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 4, (n,), generator=generator)
        x = torch.randn(n, 1, size, size, generator=generator) * 0.3
        half = size // 2
        for i, label in enumerate(y.tolist()):
            r, c = divmod(label, 2)
            x[i, 0, r * half:(r + 1) * half, c * half:(c + 1) * half] += 1.5
        return x, y

    (x_train, y_train), (x_val, y_val) = make(n_train), make(n_val)
    return SearchData(x_train, y_train, x_val, y_val)


def all_choices(net: Supernet) -> list[ArchChoice]:
    """Every member of ``net``'s space as a choice (432 for the tiny space)."""
    space = net.space
    stage_cells = [itertools.product(*(range(len(st.choices(i))) for i in range(len(st.layers))))
                   for st in space.stages]
    widths = itertools.product(*(range(len(st.widths)) for st in space.stages))
    return [ArchChoice(cells=c, widths=w, resolution=r)
            for c, w, r in itertools.product(itertools.product(*stage_cells), widths, range(len(space.resolutions)))]
