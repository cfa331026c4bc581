"""The deploy stage of a run: retrain the Pareto front, export, register, promote if better.

Runs after the evolution of :mod:`pipeline.evolution_run` (same run directory),
which receives :func:`deploy_run` from the CLI as its ``DeployStage``; it is
resumable step by step: ``deploy.json`` records, per architecture, the
retrain result, the export report, the registered version and the promotion
decision, each as soon as it is done, and a rerun skips every step already
recorded (retraining itself resumes from its epoch checkpoints).

Exactly once across kills (drilled in ``tests/pipeline/test_fault_drills.py``):
an export cut short is redone from a clean folder; registration goes on in the
interrupted attempt's ``retrain`` run and keeps a version that run registered;
a promotion decision is logged (``promotions.jsonl``) before it is applied, and
a logged one is applied again rather than decided again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from mlflow.entities import Param

from deploy.export import DeployableModel, LatencySettings, export_model
from deploy.registry import (CANDIDATE, PromotionDecision, apply_decision, logged_decision, promote_if_better,
                             register_model, test_split_id, version_of_run)
from deploy.retrain import RetrainResult, retrain_front
from pipeline.config import Config
from pipeline.data import load_dataset, read_info
from pipeline.run_dir import PROMOTIONS, kill_run_at, write_json
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

    def save() -> None:  # after every step: a kill loses at most the step it interrupted
        record["models"] = list(by_arch.values())
        write_json(record_path, record)

    for index, result in enumerate(results):
        entry = by_arch.setdefault(result.arch, {"arch": result.arch})
        entry["retrain"] = result.to_dict()
        entry["predicted_latency_ms"] = predicted.get(result.arch)  # budget.latency_runtime, batch 1, run's table
        if "export" not in entry:
            on_phase("export")
            entry["export"] = _export(result, info, images, config, root / "export" / f"model-{index}")
            save()
        if "version" not in entry:
            on_phase("register")
            entry["version"] = _register(result, entry["export"], info, images, split_id, config, tracker)
            save()
        if "promotion" not in entry:
            entry["promotion"] = _promote(entry["version"], config, tracker, root / PROMOTIONS).to_dict()
            kill_run_at("promote", root)
        save()
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
    kill_run_at("export", config.out_dir)  # exported but not recorded: a resume exports again
    data = report.to_dict()
    write_json(out / "export_report.json", data)
    return data


def _register(result: RetrainResult, export: dict[str, Any], info: Any, images: torch.Tensor, split_id: str,
              config: Config, tracker: Tracker) -> str:
    """A nested ``retrain`` run under the pipeline run, holding the registered model version.

    Exactly once across kills: an interrupted attempt's run is taken up again
    (:meth:`Tracker.resume_child`), and a version it already registered is kept.
    """
    arch = Arch.parse(result.arch)
    name = config.mlflow.registered_model
    run_id = tracker.resume_child("retrain", {"arch": result.arch}, f"retrain-{arch.input_size}px")
    version = version_of_run(tracker.client, name, run_id)
    if version is None:
        tracker.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in result.hparams.items()])
        latency = export["latency_ms"].get(config.budget.latency_runtime, {}).get("1")  # what the budget prices
        metrics = {"test_accuracy": result.test_accuracy, **({"latency_ms": latency} if latency is not None else {})}
        onnx_path = Path(export["paths"]["onnx"])
        extra = [Path(export["paths"][fmt]) for fmt in export["paths"] if fmt != "onnx"]
        extra.append(onnx_path.parent / "export_report.json")
        number = register_model(tracker.client, name, onnx_path, arch=arch, classes=info.classes, metrics=metrics,
                                input_example=images[:4].numpy(), test_split=split_id, extra_artifacts=extra,
                                run_id=run_id, experiment=config.mlflow.experiment).version
        kill_run_at("register", config.out_dir)
    else:  # registered before a kill: the alias may not have been set yet
        number = str(version.version)
        tracker.client.set_registered_model_alias(name, CANDIDATE, number)
    tracker.client.set_terminated(run_id, "FINISHED")
    return number


def _promote(version: str, config: Config, tracker: Tracker, log_path: Path) -> PromotionDecision:
    """The champion rule's decision on ``version``; one logged before a kill is finished, not taken again."""
    name = config.mlflow.registered_model
    logged = logged_decision(log_path, name, version)
    if logged is not None:
        apply_decision(tracker.client, logged)
        return logged
    return promote_if_better(tracker.client, name, version, budget_metric=config.budget.metric,
                             budget_target=config.budget.target, budget_slack=config.mlflow.promote_budget_slack,
                             min_gain=config.mlflow.promote_min_gain, log_path=log_path)
