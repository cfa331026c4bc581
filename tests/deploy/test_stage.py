"""The deploy stage's records (deploy/stage.py): which recorded steps a rerun may skip."""

from __future__ import annotations

import json
from dataclasses import replace

from deploy.retrain import RetrainResult
from deploy.stage import records_training


def test_deploy_steps_are_kept_only_for_the_training_that_made_them() -> None:
    """A resumed run whose retrain settings changed trained another model: its old version must not be kept."""
    result = RetrainResult(arch="a", hparams={"lr": 0.1}, test_accuracy=0.94, history=[{"epoch": 1, "seconds": 2.0}],
                           wall_seconds=3.0, weights_path="/run/retrain/arch-1/weights.pt", seed=0, epochs=1,
                           workers=1, tuning={"best": {"lr": 0.1}, "trials": [(1, 2)]})
    recorded = json.loads(json.dumps({"retrain": result.to_dict(), "version": "1"}))  # as read back from deploy.json
    assert records_training(recorded, result)
    assert not records_training(recorded, replace(result, weights_path="/run/retrain/arch-2/weights.pt"))
    assert not records_training({"arch": "a"}, result)
