"""A finished run directory built through the real writers (no Ray, no search): for resume/status tests."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Config, load_config
from pipeline.run_dir import RunPaths, prepare_run_dir, write_json
from pipeline.tracking import Tracker

ARCH = "input=1x12 stem=cn_k3_c8_relu stages=ds_k3_c8_relu_nores|ir_k3_s2_e3_c12_relu head=cn_k1_c32_relu classes=4"


def finished_run(root: Path, data: Path, tracked: bool = True) -> Config:
    """``root`` as a run whose evolution finished and whose deploy stage is off: resume only closes it.

    With ``tracked`` the MLflow store and parent run are real (an artifact is logged under
    ``root/mlartifacts``); without, the records name an MLflow run that was never created
    (enough for errors that are raised before MLflow is opened, and seconds faster).
    """
    config = prepare_run_dir(load_config(None, [f"data.path={data}", "retrain.enabled=false",
                                                "evolution.generations=1"]).model_copy(update={"out_dir": root}))
    paths = RunPaths(config.out_dir)
    tracker = Tracker(config) if tracked else None
    ids = {"experiment_id": tracker.experiment_id if tracker else "1",
           "run_id": tracker.parent_run_id if tracker else "0" * 32,
           "tracking_uri": tracker.uri if tracker else f"sqlite:///{paths.root / 'mlflow.db'}"}
    write_json(paths.run, {"experiment_id": ids["experiment_id"], "parent_run_id": ids["run_id"],
                           "tracking_uri": ids["tracking_uri"]})
    point = {"arch": ARCH, "val_accuracy": 0.5, "madds": 100_000, "params": 2_000, "predicted_latency_ms": None}
    summary = {"best": {**point, "reward": 0.5, "from": "generation 0"}, "final_search": {"error": "skipped"},
               "learned_space": {}, "generations": [{"generation": 0, "best_reward": 0.5, "mean_reward": 0.5,
                                                     "champion": None}],
               "pareto_front": [point],
               "mlflow": ids}
    write_json(paths.summary, summary)
    if tracker:
        tracker.client.log_dict(tracker.parent_run_id, summary, "summary.json")
    write_json(paths.state, {"format": "autospace-evolution/2", "history": [
        {"generation": 0, "best_reward": 0.5, "mean_reward": 0.5, "champion": None}]})
    write_json(paths.status, {"phase": "deploy", "running_trials": 0, "generations": 1})
    return config
