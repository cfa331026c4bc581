"""Search-space specs: which architectures a supernet search may choose from.

A space is layer-wise (AutoSpace): each searchable layer offers its own set of
candidate *cells*. A cell is an op string without channels and stride
(``ir_k5_e3_se0.25_hswish``), so the same cell can sit at any width. Each stage
chooses one output width for all its layers; layers past ``min_depth`` may
also be ``skip``, which searches the depth. The input resolution is searched
too. Stem and head are fixed convs.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml

from spaces.arch import Arch
from spaces.encoding import decode_op, encode_op
from spaces.errors import cut
from spaces.ops import ConvOp, MBConvOp, Op, SkipOp, SpecError

__all__ = ["SKIP", "StageSpace", "SearchSpace", "cell_of", "cell_op", "default_space"]

SKIP = "skip"
_FORBIDDEN_IN_CELLS = ("c", "s", "r", "g", "pg", "lg", "nores", "pool", "nobn")


def cell_op(cell: str, cin: int, cout: int, stride: int, first: bool = False) -> Op:
    """The op a cell stands for at given channels and stride.

    The first layer of a stage never has a residual: its input belongs to the previous
    stage's width choice, so the supernet cannot add it either.
    """
    if cell == SKIP:
        return SkipOp(cin)
    op = decode_op(f"{cell}_c{cout}_s{stride}", cin)
    if first and isinstance(op, MBConvOp) and op.residual:
        op = decode_op(f"{cell}_c{cout}_s{stride}_nores", cin)
    return op


def cell_of(op: Op, first: bool = False) -> str:
    """The cell an op was made from (its string without channels, stride and residual flag).

    Raises SpecError when no cell reproduces the op exactly (e.g. grouped convs).
    """
    if isinstance(op, SkipOp):
        return SKIP
    cell = "_".join(t for t in encode_op(op).split("_")
                    if not (t[:1] in ("c", "s") and t[1:].isdigit()) and t != "nores")
    if isinstance(op, ConvOp) or cell_op(cell, op.cin, op.cout, op.stride, first) != op:
        raise SpecError(f"op {encode_op(op)!r} is not expressible as a search-space cell")
    return cell


def _check_cell(cell: str, where: str) -> None:
    if cell == SKIP:
        raise SpecError(f"{where}: 'skip' is added automatically to layers past min_depth; remove it from cells")
    for token in cell.split("_")[1:]:
        for prefix in _FORBIDDEN_IN_CELLS:
            if token == prefix or (token.startswith(prefix) and token[len(prefix):].isdigit()):
                raise SpecError(f"{where}: cell {cell!r} may not set {token!r} (the space chooses widths, strides "
                                "and depth; groups and pooling are not searchable)")
    op = decode_op(f"{cell}_c8", 8)
    if isinstance(op, ConvOp):
        raise SpecError(f"{where}: cell {cell!r} is a plain conv; cells are ir_ or ds_ blocks")


@dataclass(frozen=True)
class StageSpace:
    """One stage: per-layer candidate cells, width candidates, stride of its first layer, minimum depth."""

    layers: tuple[tuple[str, ...], ...]
    widths: tuple[int, ...]
    stride: int = 1
    min_depth: int = 1

    def __post_init__(self) -> None:
        if not self.layers:
            raise SpecError("a stage needs at least one layer")
        _check_ints("widths", self.widths)
        _check_ints("stride", (self.stride,))
        _check_ints("min_depth", (self.min_depth,))
        if not self.widths or sorted(set(self.widths)) != list(self.widths) or self.widths[0] < 1:
            raise SpecError(f"widths={list(self.widths)} must be positive, distinct and increasing")
        if self.stride not in (1, 2):
            raise SpecError(f"stride={self.stride} must be 1 or 2")
        if not 1 <= self.min_depth <= len(self.layers):
            raise SpecError(f"min_depth={self.min_depth} must be between 1 and the {len(self.layers)} layers")
        for i, cells in enumerate(self.layers):
            if not all(isinstance(cell, str) for cell in cells):
                raise SpecError(f"layer {i}: cells {list(cells)} must be op strings such as ir_k3_e3")
            if not cells or len(set(cells)) != len(cells):
                raise SpecError(f"layer {i}: cells {list(cells)} must be non-empty and distinct")
            for cell in cells:
                _check_cell(cell, f"layer {i}")

    def choices(self, layer: int) -> tuple[str, ...]:
        """Candidate cells of a layer, ``skip`` included where the depth may stop."""
        return self.layers[layer] + ((SKIP,) if layer >= self.min_depth else ())

    def distinct_sequences(self) -> int:
        """Distinct op sequences (skips removed) the layers can produce.

        Different skip placements can give the same network ([A, skip] == [skip, A]), so the
        count runs over the subset automaton of layer positions rather than multiplying choices.
        """
        n = len(self.layers)
        optional = [i >= self.min_depth for i in range(n)]

        def step(states: frozenset[int], cell: str) -> frozenset[int]:
            nxt = set()
            for i in states:
                j = i
                while j < n:
                    if cell in self.layers[j]:
                        nxt.add(j + 1)
                    if not optional[j]:
                        break
                    j += 1
            return frozenset(nxt)

        alphabet = sorted({c for cells in self.layers for c in cells})
        accepting = lambda states: any(all(optional[i:]) for i in states)  # noqa: E731
        counts: dict[frozenset[int], int] = {frozenset({0}): 1}
        total = 0
        while counts:
            total += sum(c for s, c in counts.items() if accepting(s))
            nxt: dict[frozenset[int], int] = {}
            for states, count in counts.items():
                for cell in alphabet:
                    target = step(states, cell)
                    if target:
                        nxt[target] = nxt.get(target, 0) + count
            counts = nxt
        return total


@dataclass(frozen=True)
class SearchSpace:
    """A whole searchable network; ``sample``, ``contains`` and ``cardinality`` agree by construction."""

    in_channels: int
    num_classes: int
    resolutions: tuple[int, ...]
    stem: tuple[str, ...]
    stages: tuple[StageSpace, ...]
    head: tuple[str, ...]
    name: str = "space"

    def __post_init__(self) -> None:
        _check_ints("resolutions", self.resolutions)
        _check_ints("in_channels", (self.in_channels,))
        _check_ints("num_classes", (self.num_classes,))
        for where, convs in (("stem", self.stem), ("head", self.head)):
            if not all(isinstance(conv, str) for conv in convs):
                raise SpecError(f"{where}={list(convs)} must be a list of op strings such as cn_k3_c16")
        if not self.resolutions or sorted(set(self.resolutions)) != list(self.resolutions) or self.resolutions[0] < 1:
            raise SpecError(f"resolutions={list(self.resolutions)} must be positive, distinct and increasing")
        if not self.stages:
            raise SpecError("a search space needs at least one stage")
        # Building the widest and narrowest member validates stem, head and cells together.
        self.arch([[0] * len(s.layers) for s in self.stages], [len(s.widths) - 1 for s in self.stages], -1)
        self.arch([[0] * len(s.layers) for s in self.stages], [0] * len(self.stages), 0)

    # ---- members ---------------------------------------------------------------
    @property
    def stem_channels(self) -> int:
        return Arch.parse(f"input={self.in_channels}x8 stem={','.join(self.stem)} stages= head= classes=1"
                          ).stem[-1].cout if self.stem else self.in_channels

    def arch(self, cells: list[list[int]], widths: list[int], resolution: int) -> Arch:
        """The member chosen by indices: ``cells[s][l]`` into ``stage.choices(l)``, ``widths[s]``, resolution."""
        channels = self.stem_channels
        stages = []
        for s, stage in enumerate(self.stages):
            width = stage.widths[widths[s]]
            ops: list[Op] = []
            for layer, choice in enumerate(cells[s]):
                cell = stage.choices(layer)[choice]
                if cell == SKIP:
                    continue
                ops.append(cell_op(cell, channels, width, stage.stride if not ops else 1, first=not ops))
                channels = width
            stages.append(",".join(encode_op(op) for op in ops))
        return Arch.parse(
            f"input={self.in_channels}x{self.resolutions[resolution]} stem={','.join(self.stem)} "
            f"stages={'|'.join(stages)} head={','.join(self.head)} classes={self.num_classes}")

    def sample(self, rng: random.Random) -> Arch:
        """A uniformly chosen member (uniform over choices, not over distinct networks)."""
        return self.arch([[rng.randrange(len(st.choices(i))) for i in range(len(st.layers))] for st in self.stages],
                         [rng.randrange(len(st.widths)) for st in self.stages], rng.randrange(len(self.resolutions)))

    def contains(self, arch: Arch) -> bool:
        """Whether ``arch`` is a member: same stem/head/classes, a candidate resolution, and each
        stage a valid skip placement of its layers' cells at one candidate width."""
        if (arch.in_channels, arch.num_classes) != (self.in_channels, self.num_classes):
            return False
        if arch.input_size not in self.resolutions or len(arch.stages) != len(self.stages):
            return False
        empty = self.arch([[0] * len(s.layers) for s in self.stages], [0] * len(self.stages), 0)
        if arch.stem != empty.stem:
            return False
        channels = self.stem_channels
        for stage, ops in zip(self.stages, arch.stages):
            if not ops or ops[0].cout not in stage.widths:
                return False
            inputs = [channels] + [op.cout for op in ops[:-1]]

            def produces(i: int, layer: int) -> bool:
                return any(cell_op(cell, inputs[i], ops[0].cout, stage.stride if i == 0 else 1, first=(i == 0))
                           == ops[i] for cell in stage.layers[layer])

            if not _fits(stage, len(ops), produces):
                return False
            channels = ops[-1].cout
        head = Arch.parse(f"input={channels}x8 stem= stages= head={','.join(self.head)} classes=1").head
        return arch.head == head

    @cached_property
    def cardinality(self) -> int:
        """Exact number of distinct architectures in the space."""
        total = len(self.resolutions)
        for stage in self.stages:
            total *= len(stage.widths) * stage.distinct_sequences()
        return total

    @property
    def log10_cardinality(self) -> float:
        return math.log10(self.cardinality)

    # ---- serialisation -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "autospace-space/1", "name": self.name, "in_channels": self.in_channels,
            "num_classes": self.num_classes, "resolutions": list(self.resolutions), "stem": list(self.stem),
            "stages": [{"widths": list(s.widths), "stride": s.stride, "min_depth": s.min_depth,
                        "layers": [list(cells) for cells in s.layers]} for s in self.stages],
            "head": list(self.head),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        if data.get("format") != "autospace-space/1":
            raise SpecError(f"format={cut(repr(data.get('format')))}; a search space file has format: "
                            "autospace-space/1")
        try:
            stages = tuple(_stage_from_dict(i, s) for i, s in enumerate(_list(data, "stages")))
            return cls(in_channels=data["in_channels"], num_classes=data["num_classes"],
                       resolutions=tuple(_list(data, "resolutions")), stem=tuple(_list(data, "stem", ())),
                       stages=stages, head=tuple(_list(data, "head", ())), name=str(data.get("name", "space")))
        except KeyError as err:
            raise SpecError(f"search space lacks the field {err.args[0]!r}") from None
        except SpecError as err:
            raise SpecError(f"search space {cut(str(data.get('name', '')))!r}: {err}") from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def load(cls, path: Path) -> SearchSpace:
        """Read a YAML or JSON space file."""
        path = Path(path)
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except FileNotFoundError:
            raise SpecError(f"search space file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:  # JSONDecodeError is a ValueError
            raise SpecError(f"search space file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                            f"{cut(str(err))}") from None
        if not isinstance(data, dict):
            raise SpecError(f"{path} does not hold a search space mapping")
        return cls.from_dict(data)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) if path.suffix == ".json" else self.to_yaml())

    def adapted(self, in_channels: int, num_classes: int, resolutions: tuple[int, ...] | None = None) -> SearchSpace:
        """The same space for another data set's channels, classes (and resolutions)."""
        data = self.to_dict() | {"in_channels": in_channels, "num_classes": num_classes}
        if resolutions is not None:
            data["resolutions"] = list(resolutions)
        return SearchSpace.from_dict(data)


def _check_ints(name: str, values: tuple[Any, ...]) -> None:
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise SpecError(f"{name}={cut(repr(list(values)))} must be integers")


def _list(data: dict[str, Any], key: str, default: Any = None) -> list[Any]:
    """``data[key]`` as a list; a scalar or a mapping there is an error naming the field."""
    value = data[key] if default is None else data.get(key, default)
    if not isinstance(value, (list, tuple)):
        raise SpecError(f"{key}={cut(repr(value))} must be a list")
    return list(value)


def _stage_from_dict(index: int, stage: Any) -> StageSpace:
    if not isinstance(stage, dict):
        raise SpecError(f"stage {index} is {cut(repr(stage))}; each stage is a mapping with layers and widths")
    try:
        layers = tuple(tuple(_list({"layers": cells}, "layers")) for cells in _list(stage, "layers"))
        return StageSpace(layers=layers, widths=tuple(_list(stage, "widths")), stride=stage.get("stride", 1),
                          min_depth=stage.get("min_depth", 1))
    except SpecError as err:
        raise SpecError(f"stage {index}: {err}") from None


def _fits(stage: StageSpace, length: int, produces: Callable[[int, int], bool]) -> bool:
    """Whether ops 0..length-1 can be placed on increasing layers, skipping only optional ones."""
    n = len(stage.layers)

    @lru_cache(maxsize=None)
    def place(i: int, j: int) -> bool:  # i: next op to place, j: next layer
        if i == length:
            return all(k >= stage.min_depth for k in range(j, n))
        if j == n:
            return False
        return (produces(i, j) and place(i + 1, j + 1)) or (j >= stage.min_depth and place(i, j + 1))

    return place(0, 0)


def default_space() -> SearchSpace:
    """The packaged MobileNetV2-style space for 28-32 px inputs (contains the reference arch)."""
    text = resources.files("spaces").joinpath("data/default_space.yaml").read_text()
    return SearchSpace.from_dict(yaml.safe_load(text))
