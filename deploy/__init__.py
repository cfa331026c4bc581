"""Deploy stage: export trained child networks as TorchScript and ONNX models (see docs/export.md)."""

from deploy.export import (
    DeployableModel,
    ExportError,
    ExportParityError,
    ExportReport,
    LatencySettings,
    export_model,
    load_onnx_session,
    load_torchscript,
    measure_session_latency,
)

__all__ = [
    "DeployableModel",
    "ExportError",
    "ExportParityError",
    "ExportReport",
    "LatencySettings",
    "export_model",
    "load_onnx_session",
    "load_torchscript",
    "measure_session_latency",
]
