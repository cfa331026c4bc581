"""The deploy stage of a run: retrain the Pareto front, export, register, promote if better.

Runs after the evolution of :mod:`pipeline.evolution_run` (same run directory),
which receives :func:`deploy_run` from the CLI as its ``DeployStage``; it is
resumable step by step: ``deploy.json`` records, per architecture, the
retrain result, the export report, the registered version and the promotion
decision, each as soon as it is done, and a rerun skips every step already
recorded (retraining itself resumes from its epoch checkpoints). Those steps
belong to one training: when the retrain settings changed (say a resumed copy
of a run with a longer ``retrain.minutes``), the new model is exported,
registered as a new version in an MLflow run of its own, and judged anew.

Exactly once across kills (drilled in ``tests/pipeline/test_fault_drills.py``):
an export cut short is redone from a clean folder; registration goes on in the
interrupted attempt's ``retrain`` run and keeps a version that run registered;
a promotion decision is logged (``promotions.jsonl``) before it is applied, and
a logged one is applied again rather than decided again.

The per-model steps (:func:`deploy_model`: export, register, champion rule) are
also what ``autospace train`` runs for an architecture a user brings
(:mod:`deploy.train`), so both go through one mechanism.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from mlflow import MlflowClient
from mlflow.entities import Param

from deploy.export import DeployableModel, LatencySettings, export_model
from deploy.registry import (CANDIDATE, PromotionDecision, apply_decision, logged_decision, promote_if_better,
                             register_model, test_split_id, version_of_run)
from deploy.retrain import CHECKPOINT_FORMAT, RetrainResult, retrain_front
from pipeline.config import Config
from pipeline.data import DatasetInfo, load_dataset, read_info
from pipeline.run_clock import RunClock
from pipeline.run_dir import PROMOTIONS, kill_run_at, write_json
from pipeline.tracking import Tracker
from spaces.arch import Arch
from spaces.budget import COST_TAGS, measured_latency
from spaces.modules import ChildNet
from spaces.errors import cut
from spaces.search import CheckpointError

__all__ = ["DeployInputs", "apply_champion_rule", "deploy_model", "deploy_run", "export_weights", "front_archs",
           "load_child", "read_weights", "records_training"]

EXAMPLE_IMAGES = 64  # test images used for export parity and as the registry's input example


@dataclass(frozen=True)
class DeployInputs:
    """What every model trained on one data set is exported and registered with."""

    info: DatasetInfo
    images: torch.Tensor  # EXAMPLE_IMAGES native-size test images: export parity, the registry's input example
    split_id: str  # the test split the accuracies were measured on (the champion rule compares only equal ones)

    @classmethod
    def of(cls, data_path: Path) -> DeployInputs:
        images, _ = load_dataset(data_path).split("test", limit=EXAMPLE_IMAGES, seed=0, normalize=False)
        return cls(read_info(data_path), images, test_split_id(data_path))


def front_archs(summary: dict[str, Any], top_k: int) -> list[Arch]:
    """The ``top_k`` most accurate architectures of the run's Pareto front (all of it if smaller)."""
    front = sorted(summary["pareto_front"], key=lambda p: -p["val_accuracy"])
    return [Arch.parse(p["arch"]) for p in front[:top_k]]


def deploy_run(config: Config, summary: dict[str, Any], data_path: Path, tracker: Tracker, clock: RunClock,
               on_phase: Callable[[str], None] = lambda phase: None) -> dict[str, Any]:
    """Retrain -> export -> register -> promote for the run's front; returns (and saves) ``deploy.json``.

    The final trainings keep to what the run's ``clock`` leaves of ``wall_time_minutes``.
    """
    root = config.out_dir
    record_path = root / "deploy.json"
    record: dict[str, Any] = json.loads(record_path.read_text()) if record_path.exists() else {"models": []}
    archs = front_archs(summary, config.retrain.top_k)
    predicted = {p["arch"]: p.get("predicted_latency_ms") for p in summary["pareto_front"]}
    on_phase("retrain")
    results = retrain_front(archs, config, data_path, root / "retrain", clock=clock)
    inputs = DeployInputs.of(data_path)
    by_arch = {m["arch"]: m for m in record["models"]}

    def save() -> None:
        record["models"] = list(by_arch.values())
        write_json(record_path, record)

    for index, result in enumerate(results):
        entry = by_arch.get(result.arch, {})
        if not records_training(entry, result):  # another training of the arch (other settings): another model
            entry = by_arch[result.arch] = {"arch": result.arch}
        entry["predicted_latency_ms"] = predicted.get(result.arch)  # budget.latency_runtime, batch 1, run's table
        # One MLflow run per training (its directory names the arch and settings), so a retrain with other
        # settings registers a version of its own instead of finding the earlier training's.
        start_run = partial(tracker.resume_child, "retrain",
                            {"arch": result.arch, "training": Path(result.weights_path).parent.name},
                            f"retrain-{Arch.parse(result.arch).input_size}px")
        deploy_model(entry, result, inputs, config, tracker.client, start_run, root / "export" / f"model-{index}",
                     root / PROMOTIONS, save, on_phase)
    save()
    return record


def records_training(entry: dict[str, Any], result: RetrainResult) -> bool:
    """Whether ``entry``'s export, version and promotion were done for this very training."""
    return entry.get("retrain") == json.loads(json.dumps(result.to_dict()))


def deploy_model(entry: dict[str, Any], result: RetrainResult, inputs: DeployInputs, config: Config,
                 client: MlflowClient, start_run: Callable[[], str], out: Path, log_path: Path,
                 save: Callable[[], None], on_phase: Callable[[str], None] = lambda phase: None) -> None:
    """Export -> register -> promote one retrained model into ``entry``; a step ``entry`` records is skipped.

    ``start_run`` gives the MLflow run that holds the registered version (nested in a
    pipeline run — the interrupted attempt's, on resume — or one of its own for
    ``autospace train``); ``save`` persists ``entry`` after each step, so a rerun goes
    on from the step that did not finish.
    """
    entry["retrain"] = result.to_dict()
    if "export" not in entry:
        on_phase("export")
        entry["export"] = export_weights(result.arch, Path(result.weights_path), inputs, config, out)
        kill_run_at("export", config.out_dir)  # exported but not recorded: a resume exports again
        save()
    if "version" not in entry:
        on_phase("register")
        entry["version"] = _register(result, entry["export"], inputs, config, client, start_run)
        save()
    if "promotion" not in entry:
        logged = logged_decision(log_path, config.mlflow.registered_model, entry["version"])
        if logged is not None:  # decided before a kill: finish it, do not decide again
            apply_decision(client, logged)
        entry["promotion"] = (logged or apply_champion_rule(client, config, entry["version"], log_path)).to_dict()
        kill_run_at("promote", config.out_dir)
        save()


def apply_champion_rule(client: MlflowClient, config: Config, version: str, log_path: Path,
                        force: bool = False) -> PromotionDecision:
    """:func:`deploy.registry.promote_if_better` with the config's budget, slack and minimum gain."""
    return promote_if_better(client, config.mlflow.registered_model, version, budget_metric=config.budget.metric,
                             budget_target=config.budget.target, budget_slack=config.mlflow.promote_budget_slack,
                             min_gain=config.mlflow.promote_min_gain, force=force, log_path=log_path)


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict in a retrain's ``weights.pt`` or ``checkpoint.pt``, and the arch string it records.

    Read with ``weights_only=True`` (no pickled objects run). A checkpoint records its
    arch; plain weights take it from the retrain's ``result.json`` beside them, else
    None. Raises :class:`CheckpointError` naming the file and what it should be.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, foreign or pickled-object file: say which and what is needed
        why = ("it holds pickled Python objects, which weights_only loading refuses to run"
               if isinstance(err, pickle.UnpicklingError) else cut(str(err).splitlines()[0]))
        raise CheckpointError(f"{path} cannot be read as weights ({why}); give a retrain's weights.pt or "
                              "checkpoint.pt (a state dict saved with torch.save)") from None
    arch = None
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        state, arch = state.get("net"), state.get("run", {}).get("arch")
    elif (path.parent / "result.json").is_file():
        arch = json.loads((path.parent / "result.json").read_text()).get("arch")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds a {type(state).__name__} that is not a state dict of tensors; give "
                              "a retrain's weights.pt or checkpoint.pt")
    return state, arch


def load_child(arch: Arch, weights: dict[str, torch.Tensor], source: Path | str) -> ChildNet:
    """``ChildNet(arch)`` in eval mode with ``weights``; a :class:`CheckpointError` naming ``source`` if they
    belong to another architecture."""
    child = ChildNet(arch)
    try:
        child.load_state_dict(weights)
    except RuntimeError as err:  # missing/unexpected keys or shape mismatches, one per line
        problem = "; ".join(line.strip() for line in str(err).splitlines()[1:3] if line.strip())
        raise CheckpointError(f"{source} does not hold weights of {cut(arch.encode())!r} ({cut(problem)}); "
                              "give the architecture it was trained as") from None
    return child.eval()


def export_weights(arch: str, weights: Path, inputs: DeployInputs, config: Config, out: Path) -> dict[str, Any]:
    """TorchScript and ONNX files of trained ``weights`` in ``out``, parity-checked; returns the export report.

    The report is also written to ``out/export_report.json``.
    """
    parsed = Arch.parse(arch)
    model = DeployableModel.for_dataset(load_child(parsed, read_weights(weights)[0], weights), parsed,
                                        inputs.info).eval()
    if out.exists():  # a half-finished earlier attempt: export writes atomically, so start clean
        for path in out.iterdir():
            if path.is_file():
                path.unlink()
    report = export_model(model, out, formats=config.export.formats, opset=config.export.onnx_opset,
                          atol=config.export.parity_atol, test_batch=inputs.images, latency_settings=LatencySettings())
    data = report.to_dict()
    write_json(out / "export_report.json", data)
    return data


def _register(result: RetrainResult, export: dict[str, Any], inputs: DeployInputs, config: Config,
              client: MlflowClient, start_run: Callable[[], str]) -> str:
    """A new version of the registered model in the run ``start_run`` gives (FAILED if registering fails);
    a version that run registered before a kill is kept (its candidate alias set again)."""
    arch = Arch.parse(result.arch)
    run_id = start_run()
    name = config.mlflow.registered_model
    registered = version_of_run(client, name, run_id)
    if registered is not None:
        client.set_registered_model_alias(name, CANDIDATE, str(registered.version))
        client.set_terminated(run_id, "FINISHED")
        return str(registered.version)
    try:
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in result.hparams.items()])
        latency = measured_latency(export["latency_ms"], config.budget.latency_runtime)  # what the budget prices
        metrics = {"test_accuracy": result.test_accuracy,
                   **({COST_TAGS["latency"]: latency} if latency is not None else {})}
        onnx_path = Path(export["paths"]["onnx"])
        extra = [Path(export["paths"][fmt]) for fmt in export["paths"] if fmt != "onnx"]
        extra.append(onnx_path.parent / "export_report.json")
        version = register_model(client, name, onnx_path,
                                 arch=arch, classes=inputs.info.classes, metrics=metrics,
                                 input_example=inputs.images[:4].numpy(), test_split=inputs.split_id,
                                 extra_artifacts=extra, run_id=run_id, experiment=config.mlflow.experiment)
        kill_run_at("register", config.out_dir)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return version.version
