"""The Fashion-MNIST preset (configs/fashion-mnist.yaml), shrunk by ``--set`` to minutes: every stage, a champion.

Slow: run with ``pytest -m slow``; CI does. The full preset's run is recorded in docs/results.md.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from spaces.arch import Arch
from spaces.cost import arch_cost
from tests.pipeline.test_pipeline_e2e import REPO, _cli, _finish

pytestmark = pytest.mark.slow

PRESET = REPO / "configs" / "fashion-mnist.yaml"
SHRINK = ["data.train_limit=1000", "data.val_limit=300", "data.test_limit=500", "search.epochs=2",
          "search.warmup_epochs=1", "search.finetune_epochs=0", "search.evidence_samples=4",
          "search.derive_samples=16", "search.derive_ranked=2", "evolution.generations=1",
          "evolution.spaces_per_generation=2", "retrain.epochs=2", "retrain.tuning_trials=2",
          "retrain.tuning_epochs=1"]
STAGES = ["evolution", "final search", "retrain", "export", "register", "done"]


def test_the_shrunk_preset_runs_every_stage_in_order_and_registers_a_champion(tmp_path: Path) -> None:
    run_dir = tmp_path / "preset"
    overrides = [arg for kv in SHRINK for arg in ("--set", kv)]
    out = _finish(_cli("run", "--config", str(PRESET), "--out", str(run_dir), *overrides))
    # progress lines are polled every 2 s, so the quick last stages may pass unseen: the long ones must show
    # in order, and what shows comes in STAGES order
    phases = [phase for phase in re.findall(r"phase=(.+?) trials=", out) if phase in STAGES]
    shown = [p for i, p in enumerate(phases) if i == 0 or p != phases[i - 1]]
    assert shown[:3] == STAGES[:3] and shown == sorted(shown, key=STAGES.index), phases

    preset = yaml.safe_load(PRESET.read_text())["retrain"]
    [model] = json.loads((run_dir / "deploy.json").read_text())["models"]  # retrain.top_k: 1
    retrained = model["retrain"]
    assert [h["epoch"] for h in retrained["history"]] == [1, 2] and retrained["test_accuracy"] > 0.3  # chance 0.1
    budget = json.loads((Path(retrained["weights_path"]).parent / "budget.json").read_text())
    assert budget["wall_time_minutes"] == 150 and 0 < budget["minutes"] < 150  # what the run's clock left it
    for name, value in retrained["hparams"].items():  # tuned within the preset's ranges
        low, high = preset[f"{name}_range"]
        assert low <= value <= high, (name, value)
    assert arch_cost(Arch.parse(model["arch"])).madds <= 1.0e7  # the preset's MAdds budget
    assert model["export"]["parity_max_abs_diff"]["onnx"] <= 1e-4
    assert model["promotion"]["decision"] == "promoted"  # the first model of its registry
    info = json.loads((run_dir / "run.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    champion = client.get_model_version_by_alias("autospace-model", "champion")
    assert str(champion.version) == str(model["version"])
    assert float(champion.tags["test_accuracy"]) == pytest.approx(retrained["test_accuracy"])
    runs = {r.data.tags.get("autospace.kind"): r for r in client.search_runs([info["experiment_id"]])}
    # evolve -> (final search) -> retrain -> register: the registered version came from the retrain run,
    # which began after the generation's run
    assert runs["generation"].info.end_time <= runs["retrain"].info.start_time <= champion.creation_timestamp
    assert champion.run_id == runs["retrain"].info.run_id
