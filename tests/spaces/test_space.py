"""Search-space specs: cardinality, sampling, membership, serialisation, errors."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from spaces.ops import SpecError
from spaces.reference import reference_arch
from spaces.space import SKIP, SearchSpace, StageSpace, default_space
from tests.spaces.tiny_space import TINY_SPACE, tiny_space


def _brute_force_sequences(stage: StageSpace) -> int:
    combos = itertools.product(*(stage.choices(i) for i in range(len(stage.layers))))
    return len({tuple(c for c in combo if c != SKIP) for combo in combos})


@pytest.mark.parametrize("layers, min_depth", [
    ((("a",), ("a",), ("a",)), 1),
    ((("a", "b"), ("a", "b"), ("a",)), 1),
    ((("a", "b"), ("b", "c"), ("a", "c"), ("b",)), 2),
    ((("a", "b", "c"), ("a", "b", "c"), ("a", "b", "c")), 3),
])
def test_distinct_sequences_match_brute_force(layers: tuple, min_depth: int) -> None:
    names = {"a": "ir_k3_e3_relu", "b": "ir_k5_e3_relu", "c": "ds_k3_relu"}
    stage = StageSpace(layers=tuple(tuple(names[c] for c in layer) for layer in layers), widths=(8,),
                       min_depth=min_depth)
    assert stage.distinct_sequences() == _brute_force_sequences(stage)


def test_cardinality_is_exact_product_and_counts_distinct_samples() -> None:
    space = tiny_space()
    per_stage = [len(s.widths) * _brute_force_sequences(s) for s in space.stages]
    assert space.cardinality == len(space.resolutions) * per_stage[0] * per_stage[1]
    layer_choices = [range(len(st.choices(i))) for st in space.stages for i in range(len(st.layers))]
    seen = set()
    for res, w0, w1, *cells in itertools.product(range(len(space.resolutions)), range(2), range(3), *layer_choices):
        seen.add(space.arch([cells[:2], cells[2:]], [w0, w1], res).encode())
    assert len(seen) == space.cardinality


def test_default_space_holds_the_reference_and_its_samples() -> None:
    space = default_space()
    assert space.contains(reference_arch(1, 28, 10))
    assert space.log10_cardinality > 7
    rng = random.Random(0)
    for _ in range(30):
        assert space.contains(space.sample(rng))


def test_contains_rejects_non_members() -> None:
    space = tiny_space()
    member = space.sample(random.Random(3))
    text = member.encode()
    from spaces.arch import Arch
    assert not space.contains(Arch.parse(text.replace("input=1x", "input=1x1", 1)))  # resolution 18/112
    assert not space.contains(Arch.parse(text.replace("classes=4", "classes=5")))
    wrong_kernel = Arch.parse(text.replace("_k3_", "_k7_", 1))
    assert not space.contains(wrong_kernel)


def test_round_trips_yaml_and_json(tmp_path: Path) -> None:
    space = tiny_space()
    for name in ("space.yaml", "space.json"):
        space.save(tmp_path / name)
        assert SearchSpace.load(tmp_path / name) == space


@pytest.mark.parametrize("change, expected", [
    ({"resolutions": [12, 8]}, "resolutions=.* must be positive, distinct and increasing"),
    ({"format": "x"}, "format: autospace-space/1"),
    ({"stages": [{"widths": [8], "layers": [["ir_k3_e3_c8_relu"]]}]}, "may not set 'c8'"),
    ({"stages": [{"widths": [8], "layers": [["skip"]]}]}, "'skip' is added automatically"),
    ({"stages": [{"widths": [8], "layers": [["cn_k3_relu"]]}]}, "is a plain conv"),
    ({"stages": [{"widths": [16, 8], "layers": [["ds_k3"]]}]}, "widths=.* must be positive, distinct"),
    ({"stages": [{"widths": [8], "min_depth": 2, "layers": [["ds_k3"]]}]}, "min_depth=2 must be between"),
    ({"stages": [{"widths": [8], "layers": [["ds_k4"]]}]}, "kernel k=4 must be odd"),
])
def test_invalid_spaces_name_the_problem(change: dict, expected: str) -> None:
    with pytest.raises(SpecError, match=expected):
        SearchSpace.from_dict(TINY_SPACE | change)


def test_missing_field_is_named() -> None:
    data = dict(TINY_SPACE)
    del data["resolutions"]
    with pytest.raises(SpecError, match="lacks the field 'resolutions'"):
        SearchSpace.from_dict(data)


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["stages"][0].update(widths=["a", "b"]), "stage 0: widths=['a', 'b'] must be integers"),
    (lambda d: d.update(stages=5), "stages=5 must be a list"),
    (lambda d: d.update(stages=["x"]), "stage 0 is 'x'; each stage is a mapping"),
    (lambda d: d["stages"][0].update(layers="ds_k3_relu"), "layers='ds_k3_relu' must be a list"),
    (lambda d: d["stages"][0]["layers"].append([5]), "cells [5] must be op strings"),
    (lambda d: d.update(resolutions=[8, "12"]), "resolutions=[8, '12'] must be integers"),
    (lambda d: d.update(stem="cn_k3_c8"), "stem='cn_k3_c8' must be a list"),
])
def test_wrong_types_in_a_space_are_spec_errors(change: Any, expected: str) -> None:
    data = json.loads(json.dumps(TINY_SPACE))
    change(data)
    with pytest.raises(SpecError) as caught:
        SearchSpace.from_dict(data)
    assert expected in str(caught.value)


@pytest.mark.parametrize("name, text, expected", [
    ("space.yaml", "stages: [1", "is not valid YAML"),
    ("space.json", "{", "is not valid JSON"),
    ("space.yaml", "\udcff", "is not valid YAML"),
    ("space.yaml", "- 1", "does not hold a search space mapping"),
])
def test_broken_space_files_are_spec_errors_naming_the_file(tmp_path: Path, name: str, text: str,
                                                            expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(SpecError, match=expected) as caught:
        SearchSpace.load(path)
    assert str(path) in str(caught.value)
