"""Read and write the explicit ``autospace-arch/1`` interchange format.

The format (see ``spaces/data/paper_models.json``, a copy of the shared reference
file) spells every layer out — channels, kernel, stride, groups, SE reduced
channels, biases — so published models can be built and counted with no hidden
rounding rule. Blocks are grouped into stages at each stride-2 block.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from spaces.arch import Arch
from spaces.errors import cut
from spaces.ops import ConvOp, MBConvOp, Op, SEOp, SkipOp, SpecError

__all__ = ["FORMAT", "NamedArch", "load_interchange", "arch_from_model", "arch_to_model", "reference_models"]

FORMAT = "autospace-arch/1"


@dataclass(frozen=True)
class NamedArch:
    """An ``Arch`` with its name and, for published models, the figures to compare with."""

    name: str
    arch: Arch
    published: dict[str, Any] | None = None
    reference_count: dict[str, int] | None = None


def _get(layer: dict[str, Any], key: str, where: str) -> Any:
    if key not in layer:
        raise SpecError(f"{where}: missing field {key!r}")
    return layer[key]


def _located(build: Callable[[dict[str, Any], str], Op]) -> Callable[[dict[str, Any], str], Op]:
    """Prefix an op constructor's error with the layer it came from."""
    def wrapper(layer: dict[str, Any], where: str) -> Op:
        try:
            return build(layer, where)
        except SpecError as err:
            if str(err).startswith(where):
                raise
            raise SpecError(f"{where}: {err}") from None
    return wrapper


@_located
def _conv(layer: dict[str, Any], where: str) -> ConvOp:
    return ConvOp(cin=_get(layer, "cin", where), cout=_get(layer, "cout", where), k=_get(layer, "k", where),
                  s=layer.get("s", 1), groups=layer.get("groups", 1), act=layer.get("act", "none"),
                  bn=layer.get("bn", True), bias=layer.get("bias", False), after_pool=layer.get("after_pool", False))


@_located
def _block(layer: dict[str, Any], where: str) -> Op:
    kind = _get(layer, "type", where)
    if kind == "conv":
        return _conv(layer, where)
    if kind == "skip":
        if layer.get("cout", layer.get("cin")) != _get(layer, "cin", where):
            raise SpecError(f"{where}: a skip must keep its channels")
        return SkipOp(cin=layer["cin"])
    if kind != "mbconv":
        raise SpecError(f"{where}: type={kind!r} is not one of conv, mbconv, skip")
    se = layer.get("se")
    return MBConvOp(
        cin=_get(layer, "cin", where), mid=_get(layer, "mid", where), cout=_get(layer, "cout", where),
        k=_get(layer, "k", where), s=layer.get("s", 1), act=layer.get("act", "relu"),
        se=SEOp(reduced=se["reduced"], act=se.get("act", "relu"), gate=se.get("gate", "sigmoid")) if se else None,
        has_pw=layer.get("has_pw", True), residual=layer.get("residual", False), bias=layer.get("bias", False),
        pw_groups=layer.get("pw_groups", 1), pwl_groups=layer.get("pwl_groups", 1),
    )


def arch_from_model(model: dict[str, Any]) -> NamedArch:
    """One model entry of the interchange format as a ``NamedArch``."""
    if not isinstance(model, dict):
        raise SpecError(f"a model entry is a mapping with name, input_size, stem, blocks; got {cut(repr(model))}")
    name = cut(str(model.get("name", "unnamed")))
    try:
        for key, kind in (("stem", dict), ("blocks", list), ("head", list), ("classifier", dict), ("published", dict),
                          ("reference_count", dict)):
            if model.get(key) is not None and not isinstance(model[key], kind):
                raise SpecError(f"{key}={cut(repr(model[key]))} must be a {'mapping' if kind is dict else 'list'}")
        blocks = [_block(b, f"{name} block {i}") for i, b in enumerate(_get(model, "blocks", name))]
        stages: list[list[Op]] = []
        for op in blocks:
            if not stages or op.stride == 2:
                stages.append([])
            stages[-1].append(op)
        head = [_conv(h, f"{name} head {i}") for i, h in enumerate(model.get("head", []))]
        classifier = model.get("classifier")
        classes = _get(model, "num_classes", name)
        arch = Arch(input_size=_get(model, "input_size", name), in_channels=model.get("stem", {}).get("cin", 3),
                    num_classes=classes, stem=(_conv(_get(model, "stem", name), f"{name} stem"),),
                    stages=tuple(tuple(s) for s in stages), head=tuple(head))
        if classifier and (classifier.get("cin") != arch.feature_channels or classifier.get("cout") != classes):
            raise SpecError(f"{name}: classifier {classifier.get('cin')}->{classifier.get('cout')} does not match "
                            f"features {arch.feature_channels} -> num_classes {classes}")
    except (TypeError, KeyError, AttributeError) as err:
        raise SpecError(f"{name}: malformed layer ({cut(str(err))})") from None
    except SpecError as err:
        if str(err).startswith(name):
            raise
        raise SpecError(f"{name}: {err}") from None
    return NamedArch(name, arch, model.get("published"), model.get("reference_count"))


def _op_dict(op: Op) -> dict[str, Any]:
    if isinstance(op, SkipOp):
        return {"type": "skip", "cin": op.cin, "cout": op.cout}
    if isinstance(op, ConvOp):
        return {"type": "conv", "cin": op.cin, "cout": op.cout, "k": op.k, "s": op.s, "groups": op.groups,
                "act": op.act, "bn": op.bn, "bias": op.bias, **({"after_pool": True} if op.after_pool else {})}
    return {"type": "mbconv", "cin": op.cin, "mid": op.mid, "cout": op.cout, "k": op.k, "s": op.s,
            "e": round(op.expansion, 4), "has_pw": op.has_pw, "act": op.act,
            "se": {"reduced": op.se.reduced, "act": op.se.act, "gate": op.se.gate, "bias": True} if op.se else None,
            "residual": op.residual, "bias": op.bias, "pw_groups": op.pw_groups, "pwl_groups": op.pwl_groups}


def arch_to_model(arch: Arch, name: str) -> dict[str, Any]:
    """``arch`` as one interchange-format model entry (stem must be a single conv)."""
    if len(arch.stem) != 1:
        raise SpecError(f"the interchange format has exactly one stem conv; {name} has {len(arch.stem)}")
    return {"name": name, "input_size": arch.input_size, "num_classes": arch.num_classes,
            "stem": _op_dict(arch.stem[0]), "blocks": [_op_dict(op) for op in arch.blocks],
            "head": [_op_dict(op) for op in arch.head],
            "classifier": {"cin": arch.feature_channels, "cout": arch.num_classes, "bias": True}}


def load_interchange(data: dict[str, Any] | str | Path) -> list[NamedArch]:
    """All models of an interchange document (a path, JSON text, or parsed dict).

    Accepts the whole file (``{"format": ..., "models": [...]}``) or one bare model.
    """
    if isinstance(data, Path):
        data = data.read_text()
    if isinstance(data, str):
        data = json.loads(data)
    if not isinstance(data, dict):
        raise SpecError(f"an interchange document is a mapping, not {type(data).__name__}")
    if "models" in data:
        if data.get("format") != FORMAT:
            raise SpecError(f"format={cut(repr(data.get('format')))}; this reader understands {FORMAT!r}")
        models = data["models"]
        if not isinstance(models, list):
            raise SpecError(f"models={cut(repr(models))} must be a list of model mappings")
        return [arch_from_model(m) for m in models]
    return [arch_from_model(data)]


def reference_models() -> list[NamedArch]:
    """The published mobile models shipped with the package, with their reference counts."""
    text = resources.files("spaces").joinpath("data/paper_models.json").read_text()
    return load_interchange(text)
