"""The deploy stage of a run: retrain the Pareto front, export, register, promote if better.

Runs after the evolution of :mod:`pipeline.evolution_run` (same run directory),
which receives :func:`deploy_run` from the CLI as its ``DeployStage``; it is
resumable step by step: ``deploy.json`` records, per architecture, the
retrain result, the export report, the registered version and the promotion
decision, and a rerun skips every step already recorded (retraining itself
resumes from its epoch checkpoints).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from mlflow.entities import Param

from deploy.export import DeployableModel, LatencySettings, export_model
from deploy.registry import promote_if_better, register_model, test_split_id
from deploy.retrain import RetrainResult, retrain_front
from pipeline.config import Config
from pipeline.data import load_dataset, read_info
from pipeline.run_dir import write_json
from pipeline.tracking import Tracker
from spaces.arch import Arch
from spaces.modules import ChildNet

__all__ = ["front_archs", "deploy_run"]

EXAMPLE_IMAGES = 64  # test images used for export parity and as the registry's input example


def front_archs(summary: dict[str, Any], top_k: int) -> list[Arch]:
    """The ``top_k`` most accurate architectures of the run's Pareto front (all of it if smaller)."""
    front = sorted(summary["pareto_front"], key=lambda p: -p["val_accuracy"])
    return [Arch.parse(p["arch"]) for p in front[:top_k]]


def deploy_run(config: Config, summary: dict[str, Any], data_path: Path, tracker: Tracker,
               on_phase: Callable[[str], None] = lambda phase: None) -> dict[str, Any]:
    """Retrain -> export -> register -> promote for the run's front; returns (and saves) ``deploy.json``."""
    root = config.out_dir
    record_path = root / "deploy.json"
    record: dict[str, Any] = json.loads(record_path.read_text()) if record_path.exists() else {"models": []}
    archs = front_archs(summary, config.retrain.top_k)
    predicted = {p["arch"]: p.get("predicted_latency_ms") for p in summary["pareto_front"]}
    on_phase("retrain")
    results = retrain_front(archs, config, data_path, root / "retrain")
    info = read_info(data_path)
    images, _ = load_dataset(data_path).split("test", limit=EXAMPLE_IMAGES, seed=0, normalize=False)
    split_id = test_split_id(data_path)
    by_arch = {m["arch"]: m for m in record["models"]}
    for index, result in enumerate(results):
        entry = by_arch.setdefault(result.arch, {"arch": result.arch})
        entry["retrain"] = result.to_dict()
        entry["predicted_latency_ms"] = predicted.get(result.arch)  # budget.latency_runtime, batch 1, run's table
        if "export" not in entry:
            on_phase("export")
            entry["export"] = _export(result, info, images, config, root / "export" / f"model-{index}")
        if "version" not in entry:
            on_phase("register")
            entry["version"] = _register(result, entry["export"], info, images, split_id, config, tracker)
        if "promotion" not in entry:
            decision = promote_if_better(
                tracker.client, config.mlflow.registered_model, entry["version"],
                budget_metric=config.budget.metric,
                budget_target=config.budget.target, budget_slack=config.mlflow.promote_budget_slack,
                min_gain=config.mlflow.promote_min_gain, log_path=root / "promotions.jsonl")
            entry["promotion"] = decision.to_dict()
        record["models"] = list(by_arch.values())
        write_json(record_path, record)
    return record


def _export(result: RetrainResult, info: Any, images: torch.Tensor, config: Config, out: Path) -> dict[str, Any]:
    arch = Arch.parse(result.arch)
    child = ChildNet(arch)
    child.load_state_dict(torch.load(result.weights_path, map_location="cpu", weights_only=True))
    model = DeployableModel.for_dataset(child, arch, info).eval()
    if out.exists():  # a half-finished earlier attempt: export writes atomically, so start clean
        for path in out.iterdir():
            path.unlink()
    report = export_model(model, out, formats=config.export.formats, opset=config.export.onnx_opset,
                          atol=config.export.parity_atol, test_batch=images, latency_settings=LatencySettings())
    data = report.to_dict()
    write_json(out / "export_report.json", data)
    return data


def _register(result: RetrainResult, export: dict[str, Any], info: Any, images: torch.Tensor, split_id: str,
              config: Config, tracker: Tracker) -> str:
    """A nested ``retrain`` run under the pipeline run, holding the registered model version."""
    arch = Arch.parse(result.arch)
    run_id = tracker.start_child("retrain", {"arch": result.arch}, f"retrain-{arch.input_size}px")
    tracker.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in result.hparams.items()])
    latency = export["latency_ms"].get(config.budget.latency_runtime, {}).get("1")  # what the budget prices
    metrics = {"test_accuracy": result.test_accuracy, **({"latency_ms": latency} if latency is not None else {})}
    onnx_path = Path(export["paths"]["onnx"])
    extra = [Path(export["paths"][fmt]) for fmt in export["paths"] if fmt != "onnx"]
    extra.append(onnx_path.parent / "export_report.json")
    version = register_model(tracker.client, config.mlflow.registered_model, onnx_path,
                             arch=arch, classes=info.classes, metrics=metrics, input_example=images[:4].numpy(),
                             test_split=split_id, extra_artifacts=extra, run_id=run_id,
                             experiment=config.mlflow.experiment)
    tracker.client.set_terminated(run_id, "FINISHED")
    return version.version
