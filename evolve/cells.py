"""The cell vocabulary AutoSpace samples and mutates: MBConv and depthwise-separable variants.

A cell is an op string without channels and stride (see :mod:`spaces.space`).
Cells are written canonically (``ir_k5_e3_se0.25_hswish``), so equal cells are
equal strings and populations can be de-duplicated by string.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["CellGenes", "KERNELS", "EXPANSIONS", "SE_RATIOS", "ACTIVATIONS", "VOCABULARY_SIZE", "random_cell",
           "mutate_cell"]

KERNELS = (3, 5, 7)
EXPANSIONS = (1, 2, 3, 4, 6)  # 1 = depthwise-separable (no expansion conv)
SE_RATIOS = (0.0, 0.25)
ACTIVATIONS = ("relu", "relu6", "hswish", "swish")
# Distinct cells random_cell can make: the most a layer's population can hold (sampling more never ends).
VOCABULARY_SIZE = len(KERNELS) * len(EXPANSIONS) * len(SE_RATIOS) * len(ACTIVATIONS)


@dataclass(frozen=True)
class CellGenes:
    """The mutable genes of a cell."""

    kernel: int
    expansion: int
    se: float
    act: str

    @property
    def cell(self) -> str:
        kind = "ds" if self.expansion == 1 else "ir"
        tokens = [kind, f"k{self.kernel}"] + ([f"e{self.expansion}"] if self.expansion != 1 else [])
        tokens += [f"se{self.se:g}"] if self.se else []
        return "_".join(tokens + [self.act])

    @classmethod
    def parse(cls, cell: str) -> CellGenes:
        """Genes of a canonical cell; cells outside the vocabulary raise ValueError."""
        parts = cell.split("_")
        kernel, expansion, se, act = 3, 1, 0.0, "relu"
        for token in parts[1:]:
            if token in ACTIVATIONS:
                act = token
            elif token.startswith("se"):
                se = float(token[2:])
            elif token.startswith("k"):
                kernel = int(token[1:])
            elif token.startswith("e"):
                expansion = int(float(token[1:]))
            else:
                raise ValueError(f"cell {cell!r} has token {token!r} outside the evolvable vocabulary")
        genes = cls(kernel, expansion if parts[0] == "ir" else 1, se, act)
        if genes.cell != cell:
            raise ValueError(f"cell {cell!r} is not in canonical form ({genes.cell!r})")
        return genes


def random_cell(rng: random.Random) -> str:
    return CellGenes(rng.choice(KERNELS), rng.choice(EXPANSIONS), rng.choice(SE_RATIOS), rng.choice(ACTIVATIONS)).cell


def mutate_cell(cell: str, rng: random.Random) -> str:
    """Change one gene (kernel, expansion, SE or activation) to another allowed value."""
    genes = CellGenes.parse(cell)
    field, options = rng.choice([("kernel", KERNELS), ("expansion", EXPANSIONS), ("se", SE_RATIOS),
                                 ("act", ACTIVATIONS)])
    value = rng.choice([o for o in options if o != getattr(genes, field)])
    return CellGenes(**{**genes.__dict__, field: value}).cell
