"""The ``autospace-arch/1`` interchange format and the published reference models."""

from __future__ import annotations

import copy
import json
import random
from importlib import resources
from pathlib import Path

import pytest

from spaces.arch import Arch
from spaces.cost import arch_cost, count_module
from spaces.interchange import FORMAT, arch_from_model, arch_to_model, load_interchange, reference_models
from spaces.modules import ChildNet
from spaces.ops import MBConvOp, SpecError
from tests.spaces.random_archs import random_arch

SHARED = Path("/work/shared/reference/paper_models.json")
PACKAGED = json.loads(resources.files("spaces").joinpath("data/paper_models.json").read_text())
MODELS = {m.name: m for m in reference_models()}
RAW = {m["name"]: m for m in PACKAGED["models"]}
WITH_PUBLISHED = [n for n, m in MODELS.items() if m.published is not None]

# Published parameter counts more than 1.5% away from the exact count of the (verified) spec.
# The papers' rounded figures, not the counter, are off: MobileNetV2-1.0's 3,504,872 and
# MobileNetV3-Large-1.0's 5,483,032 are torchvision's own parameter counts.
KNOWN_PARAM_GAPS = {
    "MobileNetV2-1.0": "paper Table 4 states 3.4M; exact count 3,504,872 (+3.1%)",
    "MobileNetV3-Large-1.0": "paper states 5.4M; exact count 5,483,032 (+1.54%)",
    "FBNet-C [mobile-vision IRFBlock: no pw when e=1]": "paper states 5.5M; exact count 5,590,784 (+1.65%)",
}


def test_reference_models_present():
    assert PACKAGED["format"] == FORMAT
    assert list(MODELS) == [m["name"] for m in PACKAGED["models"]]
    assert {"MobileNetV2-1.0", "MnasNet-A1", "MobileNetV3-Large-1.0", "ProxylessNAS-mobile"} <= set(MODELS)
    assert all(m.reference_count is not None for m in MODELS.values())


@pytest.mark.parametrize("name", list(MODELS))
def test_reference_count_reproduced_exactly(name):
    model = MODELS[name]
    cost = arch_cost(model.arch)
    assert (cost.madds, cost.params) == (model.reference_count["madds"], model.reference_count["params"])
    assert model.arch.input_size == RAW[name]["input_size"]
    assert model.arch.num_classes == RAW[name]["num_classes"]
    assert len(model.arch.blocks) == len(RAW[name]["blocks"])


@pytest.mark.parametrize("name", WITH_PUBLISHED)
def test_madds_within_1p5_percent_of_published(name):
    published = MODELS[name].published["madds"]
    assert abs(arch_cost(MODELS[name].arch).madds - published) <= 0.015 * published


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_PARAM_GAPS[n])) if n in KNOWN_PARAM_GAPS else n
    for n in WITH_PUBLISHED if MODELS[n].published.get("params") is not None
])
def test_params_within_1p5_percent_of_published(name):
    published = MODELS[name].published["params"]
    assert abs(arch_cost(MODELS[name].arch).params - published) <= 0.015 * published


@pytest.mark.skipif(not SHARED.exists(), reason="no shared reference file in this checkout")
def test_packaged_copy_equals_shared_file():
    assert PACKAGED == json.loads(SHARED.read_text())


@pytest.mark.parametrize("name", ["MobileNetV2-1.0", "MobileNetV3-Large-1.0"])
def test_hook_count_agrees_at_224(name):
    arch = MODELS[name].arch
    assert arch.input_size == 224
    assert count_module(ChildNet(arch), (3, 224, 224)) == arch_cost(arch)


def test_mobilenet_v2_structure():
    arch = MODELS["MobileNetV2-1.0"].arch
    assert arch.stem[0].cout == 32 and arch.stem[0].s == 2
    assert len(arch.blocks) == 17 and arch.feature_channels == 1280
    # Stages start at each stride-2 block: 16 | 24x2 | 32x3 | 64x4, 96x3 | 160x3, 320.
    assert [len(stage) for stage in arch.stages] == [1, 2, 3, 7, 4]
    assert sum(op.residual for op in arch.blocks) == 10


def test_mobilenet_v3_head_runs_after_pooling():
    arch = MODELS["MobileNetV3-Large-1.0"].arch
    assert [op.after_pool for op in arch.head] == [False, True]
    assert any(isinstance(op, MBConvOp) and op.se is not None and op.se.gate == "hsigmoid" for op in arch.blocks)


def test_load_interchange_accepts_path_text_dict_and_bare_model(tmp_path):
    path = tmp_path / "models.json"
    path.write_text(json.dumps(PACKAGED))
    expected = [m.arch for m in MODELS.values()]
    assert [m.arch for m in load_interchange(path)] == expected
    assert [m.arch for m in load_interchange(json.dumps(PACKAGED))] == expected
    assert [m.arch for m in load_interchange(PACKAGED)] == expected
    (bare,) = load_interchange(RAW["MnasNet-A1"])
    assert bare.name == "MnasNet-A1" and bare.arch == MODELS["MnasNet-A1"].arch
    assert bare.published == RAW["MnasNet-A1"]["published"]


@pytest.mark.parametrize("name", list(MODELS))
def test_reference_models_export_round_trip(name):
    arch = MODELS[name].arch
    model = arch_to_model(arch, name)
    back = load_interchange(json.dumps(model))[0]
    assert back.name == name and back.arch == arch
    assert back.published is None and back.reference_count is None


@pytest.mark.parametrize("seed", range(40))
def test_random_arch_model_round_trip(seed):
    rng = random.Random(seed)
    arch = random_arch(rng, input_size=rng.choice((8, 15, 32)), in_channels=rng.choice((1, 3)),
                       num_classes=rng.choice((2, 10)), stem_convs=1)
    model = arch_to_model(arch, f"random-{seed}")
    assert model["classifier"] == {"cin": arch.feature_channels, "cout": arch.num_classes, "bias": True}
    back = arch_from_model(json.loads(json.dumps(model))).arch
    assert (back.input_size, back.in_channels, back.num_classes) == (arch.input_size, arch.in_channels,
                                                                     arch.num_classes)
    assert (back.stem, back.blocks, back.head) == (arch.stem, arch.blocks, arch.head)
    # Stages are regrouped: each starts at a stride-2 block (or at the first block).
    for stage in back.stages[1:]:
        assert stage[0].stride == 2
    assert all(op.stride == 1 for stage in back.stages for op in stage[1:])
    assert arch_to_model(back, f"random-{seed}") == model
    assert arch_cost(back) == arch_cost(arch)


def test_arch_to_model_needs_one_stem_conv():
    arch = Arch.parse("input=3x8 stem=cn_k3_c4_relu,cn_k3_c4_relu stages=ir_e2_c4 classes=2")
    with pytest.raises(SpecError, match="exactly one stem conv; two-stem has 2"):
        arch_to_model(arch, "two-stem")


def _broken(edit):
    model = copy.deepcopy(RAW["MobileNetV2-1.0"])
    edit(model)
    return model


def _set(path, value):
    def edit(model):
        *parents, last = path
        target = model
        for key in parents:
            target = target[key]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return edit


@pytest.mark.parametrize(("edit", "match"), [
    (_set(["stem", "k"], KeyError), r"MobileNetV2-1.0 stem: missing field 'k'"),
    (_set(["stem"], KeyError), r"MobileNetV2-1.0: missing field 'stem'"),
    (_set(["blocks"], KeyError), r"MobileNetV2-1.0: missing field 'blocks'"),
    (_set(["input_size"], KeyError), r"MobileNetV2-1.0: missing field 'input_size'"),
    (_set(["num_classes"], KeyError), r"MobileNetV2-1.0: missing field 'num_classes'"),
    (_set(["blocks", 3, "mid"], KeyError), r"MobileNetV2-1.0 block 3: missing field 'mid'"),
    (_set(["blocks", 2, "type"], KeyError), r"MobileNetV2-1.0 block 2: missing field 'type'"),
    (_set(["head", 0, "cout"], KeyError), r"MobileNetV2-1.0 head 0: missing field 'cout'"),
    (_set(["blocks", 2, "type"], "fused"), r"block 2: type='fused' is not one of conv, mbconv, skip"),
    (_set(["blocks", 2], {"type": "skip", "cin": 24, "cout": 32}), r"block 2: a skip must keep its channels"),
    (_set(["blocks", 5, "se"], {"act": "relu"}), r"MobileNetV2-1.0: malformed layer \('reduced'\)"),
    (_set(["blocks", 1, "cout"], 32), r"stage 1 block 1 expects 24 input channels but receives 32"),
    (_set(["blocks", 1, "k"], 4), r"kernel k=4 must be odd"),
    (_set(["classifier", "cin"], 1024), r"classifier 1024->1000 does not match features 1280 -> num_classes 1000"),
    (_set(["num_classes"], 10), r"classifier 1280->1000 does not match features 1280 -> num_classes 10"),
])
def test_malformed_model_raises_spec_error(edit, match):
    with pytest.raises(SpecError, match=match):
        arch_from_model(_broken(edit))


@pytest.mark.parametrize(("document", "match"), [
    ({"format": "autospace-arch/2", "models": []}, r"format='autospace-arch/2'; this reader understands 'autospace-arch/1'"),
    ({"models": []}, r"format=None; this reader understands 'autospace-arch/1'"),
    ({"format": FORMAT, "models": [{"name": "bad", "stem": {}}]}, r"bad: missing field 'blocks'"),
])
def test_malformed_document_raises_spec_error(document, match):
    with pytest.raises(SpecError, match=match):
        load_interchange(document)


def test_empty_document_is_empty():
    assert load_interchange({"format": FORMAT, "models": []}) == []
