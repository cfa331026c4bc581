"""Export a trained child network as a deployable TorchScript and ONNX model, with parity checks.

A deployable model takes what a user has: float32 images in [0, 1] at the data
set's native size. :class:`DeployableModel` therefore wraps the ``ChildNet`` with
the data set's normalisation and the resize to the arch's resolution, using the
same :func:`spaces.supernet.masking.resize_input` the child was trained through.

:func:`export_model` writes ``model.ts`` (``torch.jit.script``) and ``model.onnx``
(the dynamo exporter, single file, dynamic batch axis), checks both against eager
torch, and times them. Files are written to a temporary folder inside ``out_dir``
and moved into place only after every check passed, so a failed export leaves
nothing behind. See ``docs/export.md``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from pipeline.data.info import DatasetInfo
from spaces.arch import Arch
from spaces.latency import _median_ms, measure_module_latency
from spaces.modules import ChildNet
from spaces.onnx_session import load_onnx_session
from spaces.supernet.masking import resize_input

__all__ = [
    "FILE_NAMES",
    "FORMATS",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "DeployableModel",
    "ExportError",
    "ExportParityError",
    "ExportReport",
    "LatencySettings",
    "export_model",
    "load_torchscript",
    "measure_session_latency",
]

log = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
FILE_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx"}
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
PARITY_BATCHES = (1, 32)
"""Batch sizes the exported files must also run (the ONNX batch axis is dynamic), besides ``test_batch``."""
DYNAMO_MIN_OPSET = 18
"""Below this the dynamo exporter still emits opset 18 (its down-conversion fails with only a log line)."""

# TorchScript is deprecated in torch 2.x but still the one format torch loads without Python
# source; the warning is raised once per scripted submodule and on every load.
_JIT_DEPRECATION = r"`torch\.jit\.(script|load)` is deprecated"


class ExportError(RuntimeError):
    """An export could not be written or does not run as required; nothing was left in ``out_dir``."""


class ExportParityError(ExportError):
    """An exported file's outputs differ from eager torch by more than the tolerance."""

    def __init__(self, fmt: str, diff: float, atol: float) -> None:
        super().__init__(f"{fmt} export differs from eager torch: max abs diff {diff:.3g} exceeds "
                         f"atol {atol:.3g}; no files were written")
        self.format, self.diff, self.atol = fmt, diff, atol


class DeployableModel(nn.Module):
    """The served model: raw images in, logits out.

    Input contract: ``images`` is float32 ``N x C x H x W`` with values in [0, 1] and
    ``(C, H, W) == image_shape``, the data set's native shape (e.g. 1x28x28 for
    Fashion-MNIST); any batch size N >= 1. The model normalises per channel,
    ``(x - mean) / std`` with the training split's statistics, resizes bilinearly to
    the arch's resolution when it differs from H x W (exactly as in training), and
    returns ``N x num_classes`` logits. Another shape raises ``ValueError``.
    """

    def __init__(self, child: ChildNet, arch: Arch, image_shape: Sequence[int],
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        channels, height, width = (int(v) for v in image_shape)
        if channels != arch.in_channels:
            raise ValueError(f"images have {channels} channels but the arch expects {arch.in_channels}")
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"need one mean and std per channel ({channels}); got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std={tuple(std)} must be positive")
        self.child = child
        self.image_shape = (channels, height, width)
        self.input_size = arch.input_size
        self.num_classes = arch.num_classes
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    @classmethod
    def for_dataset(cls, child: ChildNet, arch: Arch, info: DatasetInfo) -> DeployableModel:
        """Wrap ``child`` for images of the data set described by ``info``."""
        return cls(child, arch, info.shape, info.mean, info.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        c, h, w = self.image_shape
        if images.dim() != 4 or images.shape[1] != c or images.shape[2] != h or images.shape[3] != w:
            raise ValueError(f"expected images of shape N x {c} x {h} x {w}, got {list(images.shape)}")
        x = (images - self.mean) / self.std
        return self.child(resize_input(x, self.input_size))

    def contract(self) -> dict[str, Any]:
        """The input and output contract as JSON-friendly data (``N`` is any batch size)."""
        return {
            "input": {"name": INPUT_NAME, "shape": ["N", *self.image_shape], "dtype": "float32",
                      "range": [0.0, 1.0], "normalised_inside": True, "resized_to": self.input_size},
            "output": {"name": OUTPUT_NAME, "shape": ["N", self.num_classes], "dtype": "float32",
                       "meaning": "logits"},
        }


@dataclass(frozen=True)
class LatencySettings:
    """How the exported files are timed (``spaces.latency``'s median of ``repeats`` after ``warmup``)."""

    batches: tuple[int, ...] = (1, 32)
    threads: int = 1
    warmup: int = 5
    repeats: int = 20

    def __post_init__(self) -> None:
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f"batches={self.batches} must be positive batch sizes")
        if self.threads < 1 or self.repeats < 1 or self.warmup < 0:
            raise ValueError(f"threads={self.threads} and repeats={self.repeats} must be >= 1, "
                             f"warmup={self.warmup} >= 0")


@dataclass
class ExportReport:
    """What was written and how it behaved; ``to_dict`` is JSON-ready (batch keys become strings)."""

    paths: dict[str, Path]
    file_sizes: dict[str, int]
    contract: dict[str, Any]
    torchscript_method: str | None
    onnx_exporter: str | None
    opset: int | None
    atol: float
    parity_max_abs_diff: dict[str, float]
    latency_ms: dict[str, dict[int, float]] = field(default_factory=dict)
    latency_settings: LatencySettings | None = None

    def to_dict(self) -> dict[str, Any]:
        settings = self.latency_settings
        return {
            "paths": {fmt: str(p) for fmt, p in self.paths.items()},
            "file_sizes": dict(self.file_sizes),
            "contract": self.contract,
            "torchscript_method": self.torchscript_method,
            "onnx_exporter": self.onnx_exporter,
            "opset": self.opset,
            "atol": self.atol,
            "parity_max_abs_diff": dict(self.parity_max_abs_diff),
            "latency_ms": {rt: {str(b): ms for b, ms in row.items()} for rt, row in self.latency_ms.items()},
            "latency_settings": None if settings is None else {
                "batches": list(settings.batches), "threads": settings.threads,
                "warmup": settings.warmup, "repeats": settings.repeats},
        }


# ---- loading -------------------------------------------------------------------------
def load_torchscript(path: str | os.PathLike[str]) -> torch.jit.ScriptModule:
    """A saved TorchScript model on CPU in eval mode.

    ``torch.jit.load`` reads TorchScript code and tensors; it does not unpickle
    arbitrary Python objects the way ``torch.load(weights_only=False)`` would.
    """
    with _quiet_jit():
        module = torch.jit.load(str(path), map_location="cpu")
    return module.eval()


def measure_session_latency(session: Any, input_shape: tuple[int, ...], *, warmup: int = 5,
                            repeats: int = 20) -> float:
    """Median ms of ``session.run`` on a random input, timed like ``measure_module_latency``.

    ``measure_module_latency`` re-exports a module to time onnxruntime; this times the
    file that ships. Threads are a session option (:func:`spaces.onnx_session.load_onnx_session`).
    """
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).random(input_shape, dtype=np.float32)}
    return _median_ms(lambda: session.run(None, feed), warmup, repeats)


# ---- export --------------------------------------------------------------------------
def export_model(model: DeployableModel, out_dir: str | os.PathLike[str], *,
                 formats: Sequence[str] = FORMATS, opset: int = 18, atol: float = 1e-4,
                 test_batch: torch.Tensor, latency_settings: LatencySettings | None = None) -> ExportReport:
    """Write ``model`` to ``out_dir`` in ``formats``, check parity on ``test_batch``, time it.

    ``model`` is put in eval mode. Parity: each file's outputs on ``test_batch`` and on
    batches of 1 and 32 images cycled from it must be within ``atol`` (max abs diff) of
    eager torch, else :class:`ExportParityError`; running batches 1 and 32 also proves
    the ONNX batch axis is dynamic. Latency (when ``latency_settings`` is given) is
    measured for eager torch and each written file. Files replace those of an earlier
    export only when every check passed.
    """
    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if not formats or unknown:
        raise ValueError(f"formats={formats!r}: choose one or more of {', '.join(FORMATS)}")
    if atol < 0:
        raise ValueError(f"atol={atol} must be non-negative")
    if test_batch.dtype != torch.float32:
        raise ValueError(f"test_batch must be float32 images in [0, 1], got {test_batch.dtype}")
    model.eval()
    batches = [test_batch, *(_cycle(test_batch, n) for n in PARITY_BATCHES)]
    with torch.no_grad():
        expected = [model(x) for x in batches]  # also validates test_batch against the contract

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        written: dict[str, Path] = {}
        parity: dict[str, float] = {}
        method: str | None = None
        exporter: str | None = None
        actual_opset: int | None = None
        if "torchscript" in formats:
            written["torchscript"] = tmp / FILE_NAMES["torchscript"]
            method = _export_torchscript(model, written["torchscript"])
            scripted = load_torchscript(written["torchscript"])
            with torch.no_grad():
                parity["torchscript"] = _max_diff([scripted(x) for x in batches], expected)
        if "onnx" in formats:
            written["onnx"] = tmp / FILE_NAMES["onnx"]
            exporter, actual_opset = _export_onnx(model, written["onnx"], opset)
            session = load_onnx_session(written["onnx"])
            parity["onnx"] = _max_diff([_run_session(session, x) for x in batches], expected)
        for fmt, diff in parity.items():
            if diff > atol:
                raise ExportParityError(fmt, diff, atol)
        paths: dict[str, Path] = {}
        for fmt, path in written.items():
            paths[fmt] = out_dir / path.name
            os.replace(path, paths[fmt])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    report = ExportReport(
        paths=paths, file_sizes={fmt: p.stat().st_size for fmt, p in paths.items()},
        contract=model.contract(), torchscript_method=method, onnx_exporter=exporter, opset=actual_opset,
        atol=atol, parity_max_abs_diff=parity, latency_settings=latency_settings)
    if latency_settings is not None:
        report.latency_ms = _measure_latencies(model, paths, latency_settings)
    log.info("exported %s to %s (parity %s)", ", ".join(paths), out_dir,
             ", ".join(f"{f} {d:.2g}" for f, d in parity.items()))
    return report


def _export_torchscript(model: DeployableModel, path: Path) -> str:
    """Script rather than trace: scripting keeps the resize branch and the shape check as code,
    so the file behaves like eager for every input and no tracer specialisation can creep in."""
    try:
        with _quiet_jit():
            torch.jit.script(model).save(str(path))
    except Exception as err:  # TorchScript's frontend raises several unrelated types
        raise ExportError(f"TorchScript export (torch.jit.script) failed: {err}") from err
    return "script"


def _export_onnx(model: DeployableModel, path: Path, opset: int) -> tuple[str, int]:
    """Export with the dynamo exporter, or the legacy one where dynamo cannot give ``opset``.

    Returns (exporter, opset written). Dynamo is torch's default and the legacy
    exporter is slated for removal, but dynamo only emits opset >= 18.
    """
    example = torch.full((2, *model.image_shape), 0.5)  # batch 2: export specialises a size-1 axis
    if opset < DYNAMO_MIN_OPSET:
        reason = f"opset {opset} requested, the dynamo exporter emits opset >= {DYNAMO_MIN_OPSET}"
        log.warning("ONNX %s: using the legacy exporter (dynamo=False)", reason)
    else:
        try:
            _export_dynamo(model, example, path, opset)
            written = _opset_of(path)
            if written == opset:
                return "dynamo", written
            reason = f"it wrote opset {written} instead of {opset}"
        except Exception as err:  # any exporter failure is worth one retry with the other exporter
            reason = f"{type(err).__name__}: {err}"
        log.warning("dynamo ONNX exporter unusable (%s); falling back to the legacy exporter (dynamo=False)",
                    reason)
    try:
        _export_legacy(model, example, path, opset)
    except Exception as err:
        raise ExportError(f"ONNX export failed: dynamo exporter unusable ({reason}); legacy exporter "
                          f"raised {type(err).__name__}: {err}") from err
    written = _opset_of(path)
    if written != opset:
        raise ExportError(f"the legacy ONNX exporter wrote opset {written} instead of the requested {opset}")
    return "legacy", written


def _export_dynamo(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    with _quiet_onnx_export():
        torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}},
                          external_data=False, verbose=False)


def _export_legacy(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    with warnings.catch_warnings():
        # Its deprecation is acknowledged by the log line above. The tracer warns on the shape
        # checks of forward; they read C, H, W, which the exported graph fixes, and parity and the
        # batch-1/32 runs check the result.
        warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def _opset_of(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(model)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _run_session(session: Any, x: torch.Tensor) -> torch.Tensor:
    try:
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
    except Exception as err:  # onnxruntime raises its own exception types
        raise ExportError(f"onnxruntime cannot run the exported model on a batch of shape "
                          f"{list(x.shape)}: {err}") from err


def _max_diff(outputs: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    for out, ref in zip(outputs, expected):
        if out.shape != ref.shape:
            raise ExportError(f"exported model returned shape {list(out.shape)} for an input whose eager "
                              f"output is {list(ref.shape)}")
    return max(float((out - ref).abs().max()) for out, ref in zip(outputs, expected))


def _cycle(batch: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` images taken cyclically from ``batch``: other batch sizes from the same real inputs."""
    if len(batch) == 0:
        raise ValueError("test_batch is empty")
    return batch[torch.arange(n) % len(batch)]


def _measure_latencies(model: DeployableModel, paths: dict[str, Path],
                       settings: LatencySettings) -> dict[str, dict[int, float]]:
    """Median ms per runtime and batch: eager torch, the TorchScript file, the ONNX file."""
    timing = {"threads": settings.threads, "warmup": settings.warmup, "repeats": settings.repeats}
    runtimes: dict[str, nn.Module | Any] = {"torch": model}
    if "torchscript" in paths:
        runtimes["torchscript"] = load_torchscript(paths["torchscript"])
    table: dict[str, dict[int, float]] = {}
    for name, module in runtimes.items():
        table[name] = {b: measure_module_latency(module, (b, *model.image_shape), "torch", **timing)
                       for b in settings.batches}
    if "onnx" in paths:
        session = load_onnx_session(paths["onnx"], threads=settings.threads)
        table["onnxruntime"] = {b: measure_session_latency(session, (b, *model.image_shape),
                                                           warmup=settings.warmup, repeats=settings.repeats)
                                for b in settings.batches}
    return table


# ---- warning hygiene ----------------------------------------------------------------
@contextmanager
def _quiet_jit() -> Iterator[None]:
    """Silence only TorchScript's deprecation warning (see ``docs/export.md``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_JIT_DEPRECATION, category=DeprecationWarning)
        yield


class _DropMessages(logging.Filter):
    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


@contextmanager
def _quiet_onnx_export() -> Iterator[None]:
    """Drop two messages of the dynamo exporter that say nothing about this model:
    torchvision's ops are not registered (not used here), and a torch-internal
    pytree deprecation."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    drop = _DropMessages(r"torchvision is not installed")
    registration.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                    category=FutureWarning)
            yield
    finally:
        registration.removeFilter(drop)
