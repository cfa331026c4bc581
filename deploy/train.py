"""One architecture a user brings, through the deploy stage's recipe: ``autospace train``.

The steps are the run's deploy stage, per model (:func:`deploy.stage.deploy_model`):
retrain from scratch (:func:`deploy.retrain.retrain_front`: Optuna/ASHA tuning, then
Ray Train; ``tuned=False`` trains on the centre of the configured ranges), export to
TorchScript and ONNX with the parity checks, register in MLflow and apply the champion
rule. What differs is where things go: the training directory (``config.out_dir``)
holds the checkpoints (``retrain/``), the exported files (``export/``) and the record
``train.json``; the registered version gets an MLflow run of its own (kind ``train``)
rather than one nested in a pipeline run. A rerun in the same directory skips every
step already done, like ``autospace resume``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from mlflow import MlflowClient

from deploy.registry import experiment_id
from deploy.retrain import retrain_front
from deploy.stage import DeployInputs, deploy_model, records_training
from pipeline.config import Config
from pipeline.run_dir import PROMOTIONS, write_json
from pipeline.tracking import NAME_TAG, tracking_uri
from spaces.arch import Arch

__all__ = ["TRAIN_RECORD", "promotions_log", "train_arch"]

TRAIN_RECORD = "train.json"


def promotions_log(config: Config) -> Path:
    """Where the champion decisions are appended: beside the registry's SQLite store (a run directory's
    ``promotions.jsonl``, which ``autospace status`` reads), else in the training directory."""
    uri = tracking_uri(config)
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent / PROMOTIONS
    return config.out_dir / PROMOTIONS


def train_arch(arch: Arch, config: Config, data_path: Path, *, tuned: bool = True,
               on_phase: Callable[[str], None] = lambda phase: None) -> dict[str, Any]:
    """Retrain -> export -> register -> promote ``arch``; returns (and saves) the record ``train.json``.

    The record is kept across reruns only while it describes the same training and the
    same registry; otherwise (other settings, another ``mlflow.tracking_uri``) the model
    is exported, registered and judged again.
    """
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / TRAIN_RECORD
    registry = {"tracking_uri": tracking_uri(config), "registered_model": config.mlflow.registered_model}
    on_phase("retrain")
    [result] = retrain_front([arch], config, data_path, out / "retrain", tuned=tuned)
    done = json.loads(record_path.read_text()) if record_path.exists() else {}
    same = done.get("registry") == registry and records_training(done, result)
    entry = done if same else {"arch": result.arch, "tuned": tuned, "registry": registry}
    client = MlflowClient(registry["tracking_uri"])

    def start_run() -> str:
        tags = {NAME_TAG: f"train-{out.name}", "autospace.kind": "train", "autospace.arch": result.arch,
                "autospace.tuned": str(tuned)}
        return client.create_run(experiment_id(client, config.mlflow.experiment), tags=tags).info.run_id

    deploy_model(entry, result, DeployInputs.of(data_path), config, client, start_run, out / "export",
                 promotions_log(config), lambda: write_json(record_path, entry), on_phase)
    write_json(record_path, entry)
    return entry
