"""Export of a deployable model: TorchScript/ONNX parity for every op, dynamic batch, failure hygiene."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from deploy import export
from deploy.export import (
    DeployableModel,
    ExportParityError,
    ExportReport,
    LatencySettings,
    export_model,
    load_torchscript,
)
from spaces.arch import Arch
from spaces.modules import ChildNet
from spaces.onnx_session import load_onnx_session
from spaces.ops import ConvOp, MBConvOp, SkipOp

# Every op of the vocabulary: ir (pw, grouped pw, bias, residual), ds, cn (grouped, linear, stride 1),
# skip, SE with sigmoid/hsigmoid gates and a non-default SE activation, relu/relu6/hswish/swish/linear,
# kernels 3/5/7, stride 2, a head conv and a pooled head conv without BN. Trained at 12 px, fed 16 px
# images, so the bilinear resize is part of the exported graph.
ARCH = ("input=1x12 stem=cn_k3_c8_hswish "
        "stages=ds_k5_c8_se0.25_hsig_relu6_nores,ir_k3_e2_pg2_c8_swish_b"
        "|ir_k7_s2_e3_lg2_c16_se0.25_sahswish_relu,skip,cn_k3_g2_c16_linear "
        "head=cn_k1_c32_relu6,cn_k1_c48_hswish_nobn_pool classes=4")
IMAGE_SHAPE = (1, 16, 16)
ATOL = 1e-4


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand((n, *IMAGE_SHAPE), generator=torch.Generator().manual_seed(seed))


def _randomise(model: nn.Module, seed: int) -> None:
    """He-scaled weights and non-trivial BN statistics, so parity exercises every folded term."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * math.sqrt(2 / fan_in))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=g) + 0.5)
                module.bias.copy_(torch.randn(n, generator=g) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                module.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)


def _model(seed: int = 0) -> DeployableModel:
    """The every-op model, its classifier calibrated so random images spread over the classes.

    Untrained, the logits barely depend on the image and one class always wins; scaling the
    classifier and centring its bias on a calibration batch makes the argmax check meaningful.
    """
    arch = Arch.parse(ARCH)
    model = DeployableModel(ChildNet(arch), arch, IMAGE_SHAPE, mean=(0.29,), std=(0.35,)).eval()
    _randomise(model, seed)
    classifier = model.child.classifier
    with torch.no_grad():
        classifier.weight *= 20
        classifier.bias -= model(_images(64, seed=100)).mean(0)
    return model


@dataclass
class Exported:
    model: DeployableModel
    report: ExportReport
    out_dir: Path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """One export of the every-op model, shared: the dynamo exporter takes seconds."""
    model, out_dir = _model(), tmp_path_factory.mktemp("export")
    report = export_model(model, out_dir, opset=18, atol=ATOL, test_batch=_images(8, seed=1),
                          latency_settings=LatencySettings(batches=(1, 32), warmup=1, repeats=3))
    return Exported(model, report, out_dir)


def test_arch_covers_the_vocabulary() -> None:
    ops = [op for _, op in Arch.parse(ARCH).layers()]
    mb = [op for op in ops if isinstance(op, MBConvOp)]
    convs = [op for op in ops if isinstance(op, ConvOp)]
    assert {op.has_pw for op in mb} == {True, False} and any(isinstance(op, SkipOp) for op in ops)
    assert {op.se.gate for op in mb if op.se} == {"sigmoid", "hsigmoid"}
    assert {op.act for op in ops if not isinstance(op, SkipOp)} == {"relu", "relu6", "hswish", "swish", "none"}
    assert {op.k for op in ops if not isinstance(op, SkipOp)} == {1, 3, 5, 7}
    assert any(op.stride == 2 for op in ops) and any(op.residual for op in mb)
    assert any(op.after_pool and not op.bn for op in convs) and any(not op.after_pool for op in convs[1:])
    assert Arch.parse(ARCH).input_size != IMAGE_SHAPE[-1]


def test_every_op_matches_eager_in_torchscript_and_onnx(exported: Exported) -> None:
    report = exported.report
    assert report.torchscript_method == "script" and report.onnx_exporter == "dynamo" and report.opset == 18
    assert all(0 <= d <= ATOL for d in report.parity_max_abs_diff.values())
    x = _images(16, seed=2)
    with torch.no_grad():
        eager = exported.model(x)
        scripted = load_torchscript(report.paths["torchscript"])(x)
    onnx_out = torch.from_numpy(load_onnx_session(report.paths["onnx"]).run(None, {"images": x.numpy()})[0])
    top2 = eager.topk(2, dim=1).values
    assert float((top2[:, 0] - top2[:, 1]).min()) > 10 * ATOL, "argmax check needs separated logits"
    assert len(set(eager.argmax(1).tolist())) > 1, "inputs should not all map to one class"
    for out in (scripted, onnx_out):
        assert float((out - eager).abs().max()) <= ATOL
        assert torch.equal(out.argmax(1), eager.argmax(1))


def test_onnx_batch_axis_is_dynamic(exported: Exported) -> None:
    path = exported.report.paths["onnx"]
    batch_dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    session = load_onnx_session(path)
    for n in (1, 7):
        x = _images(n, seed=3 + n)
        with torch.no_grad():
            eager = exported.model(x)
        out = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        assert out.shape == (n, 4) and float((out - eager).abs().max()) <= ATOL


def test_report_lists_files_sizes_and_latencies(exported: Exported) -> None:
    report, out_dir = exported.report, exported.out_dir
    assert sorted(p.name for p in out_dir.iterdir()) == ["model.onnx", "model.ts"]
    for fmt, path in report.paths.items():
        assert path.parent == out_dir and report.file_sizes[fmt] == path.stat().st_size > 0
    assert set(report.latency_ms) == {"torch", "torchscript", "onnxruntime"}
    assert all(row.keys() == {1, 32} and min(row.values()) > 0 for row in report.latency_ms.values())
    assert report.contract["input"]["shape"] == ["N", 1, 16, 16]
    assert report.contract["output"]["shape"] == ["N", 4]
    data = json.loads(json.dumps(report.to_dict()))
    assert data["latency_ms"]["onnxruntime"].keys() == {"1", "32"}
    assert data["onnx_exporter"] == "dynamo" and data["paths"]["onnx"].endswith("model.onnx")


def test_parity_failure_raises_and_leaves_no_files(tmp_path: Path) -> None:
    # onnxruntime folds BN into the convs and reorders float sums: its outputs differ from eager
    # by ~1e-5 here, a real difference that a tolerance of 1e-12 rejects. Opset 17 takes the fast
    # legacy exporter; the check and the clean-up do not depend on the exporter.
    out_dir = tmp_path / "out"
    with pytest.raises(ExportParityError) as info:
        export_model(_model(), out_dir, opset=17, atol=1e-12, test_batch=_images(4, seed=1))
    err = info.value
    assert err.format == "onnx" and err.diff > err.atol == 1e-12
    assert "onnx" in str(err) and "1e-12" in str(err)
    assert list(out_dir.iterdir()) == []


def test_low_opset_falls_back_to_the_legacy_exporter(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    report = export_model(_model(), tmp_path, formats=("onnx",), opset=17, test_batch=_images(4, seed=1))
    assert report.onnx_exporter == "legacy" and report.opset == 17
    assert report.parity_max_abs_diff["onnx"] <= ATOL
    assert "legacy exporter" in caplog.text


def test_input_contract_is_enforced() -> None:
    model = _model()
    with pytest.raises(ValueError, match=r"N x 1 x 16 x 16"):
        model(torch.rand(2, 1, 12, 12))
    arch = Arch.parse(ARCH)
    with pytest.raises(ValueError, match="channels"):
        DeployableModel(ChildNet(arch), arch, (3, 16, 16), (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ValueError, match="formats"):
        export_model(model, Path("unused"), formats=("tflite",), test_batch=_images(2, seed=0))


def test_dynamo_failure_falls_back_to_the_legacy_exporter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    def unsupported(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no decomposition for some op")

    monkeypatch.setattr(export, "_export_dynamo", unsupported)
    report = export_model(_model(), tmp_path, formats=("onnx",), opset=18, test_batch=_images(4, seed=1))
    assert report.onnx_exporter == "legacy" and report.opset == 18
    assert report.parity_max_abs_diff["onnx"] <= ATOL
    assert "RuntimeError: no decomposition for some op" in caplog.text
