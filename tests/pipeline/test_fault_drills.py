"""Fault drills for the steps after the evolution: SIGKILL, then ``autospace resume``.

One small run is killed successively in each step (the final search, the final
training after its tuning, export, registration, promotion) and resumed each
time; the finished run must have done every step once, with MLflow, the registry
and ``promotions.jsonl`` agreeing. The search and tuning drills are in
``test_pipeline_e2e.py``. Steps long enough to hit from outside are killed the
way those drills kill (the CLI's process group, once a file shows the step is
under way); export, registration and promotion take a fraction of a second, so
the run kills itself there (``$AUTOSPACE_FAULT_KILL_AT``, :func:`pipeline.run_dir.kill_run_at`).

Slow (Ray trials start worker groups): run with ``pytest -m slow``; CI does.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from pipeline.run_dir import FAULT_KILL_ENV
from tests.pipeline.test_pipeline_e2e import _cli, _finish, _kill_when, _mlflow_runs, _status, _write_config

pytestmark = pytest.mark.slow

MODEL = "autospace-model"


def _killed_at(point: str, run_dir: Path) -> None:
    """Resume the run with the kill hook set at ``point``; it must die there, by SIGKILL."""
    process = _cli("resume", str(run_dir), env={FAULT_KILL_ENV: point})
    out, _ = process.communicate(timeout=600)
    assert process.returncode == -signal.SIGKILL, f"not killed at {point}: {out[-3000:]}"


def _deploy_record(run_dir: Path) -> dict:
    path = run_dir / "deploy.json"
    return json.loads(path.read_text()) if path.exists() else {"models": []}


def test_sigkill_in_each_step_after_the_evolution_then_resume_does_each_once(tiny_dataset: Path,
                                                                             tmp_path: Path) -> None:
    config = _write_config(tmp_path, tiny_dataset, generations=1, deploy=True).read_text()
    config_file = tmp_path / "drill.yaml"
    # a final training of 12 epochs: long enough to be killed between two of its checkpoints
    config_file.write_text(config.replace("top_k: 1, epochs: 2", "top_k: 1, epochs: 12"))
    run_dir = tmp_path / "run"

    # the final search, an epoch in
    final_checkpoint = run_dir / "final" / "space-0" / "search.pt"
    _kill_when(_cli("run", "--config", str(config_file)), final_checkpoint.exists)
    assert json.loads((run_dir / "evolution.json").read_text())["generation"] == 1
    assert not (run_dir / "summary.json").exists()

    # the final training, after its tuning, an epoch in
    retrain = run_dir / "retrain"
    _kill_when(_cli("resume", str(run_dir)), lambda: any(retrain.glob("arch-*/checkpoint.pt")))
    [arch_dir] = retrain.glob("arch-*")
    tuning = json.loads((arch_dir / "tuning.json").read_text())
    trained = torch.load(arch_dir / "checkpoint.pt", weights_only=True)["history"]
    assert 1 <= len(trained) < 12 and not (arch_dir / "result.json").exists()
    assert not (run_dir / "deploy.json").exists()

    # exported, not yet recorded
    _killed_at("export", run_dir)
    assert (run_dir / "export" / "model-0" / "model.onnx").exists() and not _deploy_record(run_dir)["models"]

    # registered, the retrain run not yet closed, the version not yet recorded
    _killed_at("register", run_dir)
    [entry] = _deploy_record(run_dir)["models"]
    assert "export" in entry and "version" not in entry
    client, info, _ = _mlflow_runs(run_dir)
    [registered] = client.search_model_versions(f"name='{MODEL}'")

    # the promotion decided, logged and applied, not yet recorded
    _killed_at("promote", run_dir)
    [entry] = _deploy_record(run_dir)["models"]
    assert entry["version"] == str(registered.version) and "promotion" not in entry

    _finish(_cli("resume", str(run_dir)))
    status = _status(run_dir)
    assert status["finished"] and status["generations_done"] == 1
    # each step once: the tuning was kept, the training finished from its checkpoint, one export
    result = json.loads((arch_dir / "result.json").read_text())
    assert result["tuning"] == {k: v for k, v in tuning.items() if k != "key"}  # the cache's settings key
    assert [h["epoch"] for h in result["history"]] == list(range(1, 13))
    assert result["history"][:len(trained)] == trained  # resumed (epoch timings would differ if redone)
    [model] = _deploy_record(run_dir)["models"]
    assert model["retrain"]["test_accuracy"] == result["test_accuracy"]
    assert model["export"]["parity_max_abs_diff"]["onnx"] <= 1e-4
    assert sorted(p.name for p in (run_dir / "export" / "model-0").iterdir()) == \
        ["export_report.json", "model.onnx", "model.ts"]
    # MLflow: the run closed once, each generation and space logged once, one retrain run
    client, info, runs = _mlflow_runs(run_dir)
    assert client.get_run(info["parent_run_id"]).info.status == "FINISHED"
    kinds = [r.data.tags.get("autospace.kind") for r in runs]
    assert kinds.count("generation") == 1 and kinds.count("space") == 2 and kinds.count("retrain") == 1
    [retrain_run] = [r for r in runs if r.data.tags.get("autospace.kind") == "retrain"]
    assert retrain_run.info.status == "FINISHED" and retrain_run.data.tags["autospace.arch"] == model["arch"]
    # the registry: one version, from that run, champion and candidate, decided once
    [version] = client.search_model_versions(f"name='{MODEL}'")
    assert str(version.version) == model["version"] == str(registered.version)
    assert version.run_id == retrain_run.info.run_id
    assert set(client.get_model_version(MODEL, version.version).aliases) == {"candidate", "champion"}
    assert version.tags["promotion_decision"] == model["promotion"]["decision"] == "promoted"
    decisions = [json.loads(line) for line in (run_dir / "promotions.jsonl").read_text().splitlines()]
    assert decisions == [model["promotion"]]
    assert status["registry_champion"]["version"] == model["version"]
