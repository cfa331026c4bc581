"""Retraining end to end on a real local Ray: ASHA tuning, Ray Train final training with the recipe, resume."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import ray
import torch
from ray.train import TrainingFailedError

from deploy.retrain import (FAULT_ENV, Hyperparameters, RetrainResult, retrain, retrain_front,
                            tune_hyperparameters)
from pipeline.config import Config, ConfigError, load_config
from pipeline.data import load_dataset
from spaces.arch import Arch
from spaces.modules import ChildNet
from spaces.search import CheckpointError
from spaces.training import evaluate
from spaces.supernet import resize_input

ARCH = Arch.parse("input=1x12 stem=cn_k3_c8_relu stages=ds_k3_c8_relu_nores|ir_k3_s2_e3_c12_relu "
                  "head=cn_k1_c32_relu classes=4")


def tiny_config(data: Path, *overrides: str) -> Config:
    """Seconds-long settings; one trial at a time so ASHA sees results in a fixed order."""
    return load_config(None, [f"data.path={data}", "retrain.epochs=4", "retrain.batch_size=16",
                              "retrain.tuning_trials=6", "retrain.tuning_epochs=3", "retrain.lr_range=[0.002, 0.5]",
                              "ray.max_concurrent_trials=1", "ray.max_failures=0", *overrides])


def wait_for_free_cpus(timeout: float = 5.0) -> float:
    """Free CPUs once every reservation is released (release is asynchronous), or at the timeout."""
    total = ray.cluster_resources()["CPU"]
    deadline = time.monotonic() + timeout
    while (free := ray.available_resources().get("CPU", 0.0)) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    return free


def test_bad_inputs_are_named(tiny_dataset: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_dataset)
    with pytest.raises(ValueError, match="list is empty"):
        retrain_front([], config, tiny_dataset, tmp_path)
    three = Arch.parse(ARCH.encode().replace("classes=4", "classes=3"))
    with pytest.raises(ValueError, match="has 3 classes but the data set .* has 4"):
        retrain_front([ARCH, three], config, tiny_dataset, tmp_path)
    with pytest.raises(ValueError, match="lack label_smoothing, augmentation"):
        Hyperparameters.from_dict({"lr": 0.1, "weight_decay": 1e-4})
    with pytest.raises(ValueError, match="low end must be > 0"):
        tune_hyperparameters(ARCH, tiny_config(tiny_dataset, "retrain.weight_decay_range=[0, 0.001]"),
                             tiny_dataset, tmp_path)


def test_asha_stops_trials_early_and_leaves_every_cpu_free(ray_cluster: dict[str, float],
                                                           tiny_dataset: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_dataset)
    tuning = tune_hyperparameters(ARCH, config, tiny_dataset, tmp_path)
    assert wait_for_free_cpus() == ray_cluster["CPU"]
    assert len(tuning.trials) == 6 and all(t["error"] is None for t in tuning.trials)
    assert tuning.stopped_early >= 1 and min(t["iterations"] for t in tuning.trials) < 3
    assert max(t["iterations"] for t in tuning.trials) == 3
    ranges = config.retrain
    best = tuning.best
    assert ranges.lr_range[0] <= best.lr <= ranges.lr_range[1]
    assert ranges.weight_decay_range[0] <= best.weight_decay <= ranges.weight_decay_range[1]
    assert ranges.label_smoothing_range[0] <= best.label_smoothing <= ranges.label_smoothing_range[1]
    assert ranges.augmentation_range[0] <= best.augmentation <= ranges.augmentation_range[1]
    assert tuning.best_val_accuracy == max(t["val_accuracy"] for t in tuning.trials if t["iterations"] == 3)
    assert json.loads((tmp_path / "tuning.json").read_text())["stopped_early"] == tuning.stopped_early
    assert tune_hyperparameters(ARCH, config, tiny_dataset, tmp_path) == tuning  # cached, not re-run


def test_an_interrupted_tuning_keeps_its_finished_trials(ray_cluster: dict[str, float], tiny_dataset: Path,
                                                         tmp_path: Path) -> None:
    config = tiny_config(tiny_dataset, "retrain.tuning_trials=3", "retrain.tuning_epochs=1")
    whole = tune_hyperparameters(ARCH, config, tiny_dataset, tmp_path)
    record = tmp_path / "tuning-trials.json"
    recorded = json.loads(record.read_text())
    # the driver recorded every trial as Tune finished it, as the tuning itself reports them
    assert sorted(recorded["trials"], key=lambda t: t["hparams"]["lr"]) == \
        sorted(whole.trials, key=lambda t: t["hparams"]["lr"])
    # what a tuning killed after its second trial leaves: the record of two trials, no tuning.json
    (tmp_path / "tuning.json").unlink()
    record.write_text(json.dumps({**recorded, "trials": recorded["trials"][:2]}))
    resumed = tune_hyperparameters(ARCH, config, tiny_dataset, tmp_path)
    assert resumed.trials[:2] == recorded["trials"][:2]  # kept as they were, not trained again
    assert len(resumed.trials) == 3 and resumed.trials[2]["hparams"] not in [t["hparams"] for t in resumed.trials[:2]]
    assert len(json.loads(record.read_text())["trials"]) == 3
    # a record of other settings is not taken for this tuning's
    (tmp_path / "tuning.json").unlink()
    other = tiny_config(tiny_dataset, "retrain.tuning_trials=3", "retrain.tuning_epochs=1", "retrain.seed=7")
    assert all(t not in resumed.trials for t in tune_hyperparameters(ARCH, other, tiny_dataset, tmp_path).trials)
    assert wait_for_free_cpus() == ray_cluster["CPU"]


@pytest.fixture(scope="module")
def front(ray_cluster: dict[str, float], tiny_dataset: Path,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[RetrainResult, Path, Config]:
    """One tuned (2 quick trials) and retrained (2 workers) architecture, shared by the tests below.

    The recipe is on (warm-up, erasing, EMA), so the resume test covers its state too; no flips, which
    would change the tiny data's class (which quadrant is bright).
    """
    storage = tmp_path_factory.mktemp("front")
    config = tiny_config(tiny_dataset, "retrain.tuning_trials=2", "retrain.tuning_epochs=1", "retrain.workers=2",
                         "retrain.warmup_epochs=1", "retrain.erasing_probability=0.2", "retrain.ema_decay=0.8")
    [result] = retrain_front([ARCH], config, tiny_dataset, storage)
    return result, storage, config


def test_retrained_arch_beats_chance_and_its_weights_reload(front: tuple[RetrainResult, Path, Config],
                                                            tiny_dataset: Path) -> None:
    result, storage, _ = front
    assert result.test_accuracy > 0.6  # 4 balanced classes: chance is 0.25
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4] and result.workers == 2
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.tuning is not None and len(result.tuning["trials"]) == 2
    assert result.hparams == result.tuning["best"]
    net = ChildNet(ARCH)
    net.load_state_dict(torch.load(result.weights_path, weights_only=True))
    net.eval()
    x_test, y_test = load_dataset(tiny_dataset).split("test")
    assert evaluate(net, resize_input(x_test, ARCH.input_size), y_test) == result.test_accuracy
    saved = json.loads((storage / "results.json").read_text())
    assert [RetrainResult.from_dict(r) for r in saved] == [result]


def test_a_rerun_skips_finished_architectures(front: tuple[RetrainResult, Path, Config], tiny_dataset: Path) -> None:
    result, storage, config = front
    start = time.perf_counter()
    fewer_workers = config.model_copy(update={"retrain": config.retrain.model_copy(update={"workers": 1})})
    again = retrain_front([ARCH], fewer_workers, tiny_dataset, storage)
    assert again == [result] and time.perf_counter() - start < 1.0
    assert len(list(storage.glob("arch-*"))) == 1


def test_resume_after_an_interruption_equals_the_uninterrupted_run(front: tuple[RetrainResult, Path, Config],
                                                                   tiny_dataset: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    uninterrupted, _, config = front
    hparams = Hyperparameters.from_dict(uninterrupted.hparams)
    monkeypatch.setenv(FAULT_ENV, "2")
    with pytest.raises(TrainingFailedError):
        retrain(ARCH, hparams, config, tiny_dataset, tmp_path)
    assert len(torch.load(tmp_path / "checkpoint.pt", weights_only=True)["history"]) == 2
    monkeypatch.delenv(FAULT_ENV)
    resumed = retrain(ARCH, hparams, config, tiny_dataset, tmp_path)

    assert resumed.test_accuracy == uninterrupted.test_accuracy
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in uninterrupted.history]
    ours, theirs = (torch.load(r.weights_path, weights_only=True) for r in (resumed, uninterrupted))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

    other = Hyperparameters(**{**hparams.to_dict(), "lr": hparams.lr / 2})
    with pytest.raises(CheckpointError, match="belongs to another architecture or settings"):
        retrain(ARCH, other, config, tiny_dataset, tmp_path)
    torch.save([1, 2, 3], tmp_path / "checkpoint.pt")  # loadable with weights_only, but no checkpoint
    with pytest.raises(CheckpointError, match="holds a list, not a retrain checkpoint; delete it"):
        retrain(ARCH, hparams, config, tiny_dataset, tmp_path)


def test_more_workers_than_cpus_is_refused(ray_cluster: dict[str, float], tiny_dataset: Path,
                                           tmp_path: Path) -> None:
    hparams = Hyperparameters(lr=0.1, weight_decay=1e-4, label_smoothing=0.0, augmentation=0.0)
    with pytest.raises(ConfigError, match="the final training needs retrain.workers x ray.cpus_per_worker = 3 x 1.0 = 3 CPUs"):
        retrain(ARCH, hparams, tiny_config(tiny_dataset, "retrain.workers=3"), tiny_dataset, tmp_path)
