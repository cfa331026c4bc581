"""``autospace train`` and ``autospace export`` on tiny data: real Ray Train, MLflow on SQLite, onnxruntime.

One training (no tuning, 2 epochs, ONNX opset 17 through the fast legacy exporter) of
the first Pareto-front point of a finished run directory is shared by the tests: it
lands in that run's own registry and promotion log. Tuned training is exercised by the
serving test (tests/deploy/test_serving.py, slow) and by tests/deploy/test_retrain.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from deploy.registry import load_registered
from deploy.retrain import untuned_hyperparameters
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.data import load_dataset
from pipeline.tables import arch_id
from spaces.onnx_session import load_onnx_session
from tests.pipeline.finished_run import ARCH, finished_run

SETTINGS = ["--set", "retrain.epochs=2", "--set", "retrain.batch_size=16", "--set", "export.onnx_opset=17",
            "--set", "budget.target=1e6"]


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(ray_cluster: dict[str, float], tiny_dataset: Path,
            tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A finished run and ``autospace train RUN:0 --no-tune`` into a training directory of its own."""
    run = tmp_path_factory.mktemp("run") / "run"
    finished_run(run, tiny_dataset)
    out = tmp_path_factory.mktemp("train") / "arch"
    code, stdout, stderr = _main(["train", f"{run}:0", "--no-tune", "--out", str(out), *SETTINGS])
    assert code == 0, stderr[-3000:]
    return run, out, stdout


def _test_images(data: Path, n: int = 16) -> np.ndarray:
    return load_dataset(data).split("test", limit=n, seed=0, normalize=False)[0].numpy()


def test_train_from_a_run_registers_in_the_runs_registry_and_crowns_it(trained: tuple[Path, Path, str],
                                                                       tiny_dataset: Path) -> None:
    run, out, stdout = trained
    record = json.loads((out / "train.json").read_text())
    assert record["arch"] == ARCH and record["tuned"] is False and record["version"] == "1"
    retrain = record["retrain"]
    assert retrain["test_accuracy"] > 0.4 and [h["epoch"] for h in retrain["history"]] == [1, 2]
    # untuned: the centre of the run config's ranges (geometric for the log-uniform ones)
    config = load_config(run / "config.yaml")
    assert retrain["hparams"] == pytest.approx(untuned_hyperparameters(config).to_dict())
    assert retrain["hparams"]["lr"] == pytest.approx(np.sqrt(np.prod(config.retrain.lr_range)))
    assert Path(retrain["weights_path"]).is_relative_to(out / "retrain")
    paths = {fmt: Path(p) for fmt, p in record["export"]["paths"].items()}
    assert paths == {"torchscript": out / "export" / "model.ts", "onnx": out / "export" / "model.onnx"}
    assert max(record["export"]["parity_max_abs_diff"].values()) <= 1e-4
    # the run's registry (its SQLite store) and its promotion log, so `status` names the new champion
    assert record["registry"]["tracking_uri"] == f"sqlite:///{run.resolve() / 'mlflow.db'}"
    assert record["promotion"]["decision"] == "promoted" and record["promotion"]["cost"] <= 1e6
    client = MlflowClient(record["registry"]["tracking_uri"])
    champion = client.get_model_version_by_alias("autospace-model", "champion")
    assert str(champion.version) == "1" and champion.tags["arch"] == ARCH
    assert float(champion.tags["test_accuracy"]) == pytest.approx(retrain["test_accuracy"])
    mlflow_run = client.get_run(champion.run_id)
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.data.tags["autospace.kind"] == "train"
    assert float(mlflow_run.data.params["lr"]) == pytest.approx(retrain["hparams"]["lr"])
    code, status, _ = _main(["status", str(run)])
    assert code == 0 and "autospace-model v1 (promoted" in status
    # the registered model is the exported file
    session, metadata = load_registered(client, "models:/autospace-model@champion")
    images = _test_images(tiny_dataset)
    exported = load_onnx_session(paths["onnx"])
    assert np.array_equal(session.run(None, {"images": images})[0], exported.run(None, {"images": images})[0])
    assert metadata["classes"] == ["a", "b", "c", "d"]
    # what it printed: the model row by id, where everything went, how to predict and serve it
    assert arch_id(ARCH) in stdout and "v1" in stdout and "promoted" in stdout and str(out) in stdout
    assert "autospace predict --tracking-uri" in stdout and "mlflow models serve -m models:/autospace-model/1" in stdout


def test_a_rerun_skips_every_step_done(trained: tuple[Path, Path, str]) -> None:
    run, out, _ = trained
    before = (out / "train.json").read_text(), (run / "promotions.jsonl").read_text()
    start = time.perf_counter()
    code, _, stderr = _main(["train", f"{run}:0", "--no-tune", "--out", str(out), *SETTINGS])
    assert code == 0, stderr[-3000:]
    assert time.perf_counter() - start < 15  # no training, export or registration
    assert ((out / "train.json").read_text(), (run / "promotions.jsonl").read_text()) == before
    versions = MlflowClient(f"sqlite:///{run.resolve() / 'mlflow.db'}").search_model_versions("name='autospace-model'")
    assert [str(v.version) for v in versions] == ["1"]


def test_export_a_checkpoint_reproduces_the_registered_model(trained: tuple[Path, Path, str], tiny_dataset: Path,
                                                             tmp_path: Path) -> None:
    _, out, _ = trained
    record = json.loads((out / "train.json").read_text())
    weights = Path(record["retrain"]["weights_path"])
    code, stdout, stderr = _main(["export", str(weights), "--out", str(tmp_path / "a"), "--set",
                                  f"data.path={tiny_dataset}", "--set", "export.onnx_opset=17"])
    assert code == 0, stderr[-3000:]
    assert "model.onnx" in stdout and "max abs diff to eager torch" in stdout
    images = _test_images(tiny_dataset)
    ours = load_onnx_session(tmp_path / "a" / "model.onnx").run(None, {"images": images})[0]
    theirs = load_onnx_session(record["export"]["paths"]["onnx"]).run(None, {"images": images})[0]
    assert np.allclose(ours, theirs, atol=1e-5)  # weights.pt's arch came from result.json beside it
    assert json.loads((tmp_path / "a" / "export_report.json").read_text())["paths"]["onnx"] == \
        str(tmp_path / "a" / "model.onnx")

    # a retrain checkpoint records its arch; a bare state dict needs --arch
    code, _, stderr = _main(["export", str(weights.with_name("checkpoint.pt")), "--out", str(tmp_path / "b"),
                             "--set", f"data.path={tiny_dataset}", "--set", "export.onnx_opset=17"])
    assert code == 0 and (tmp_path / "b" / "model.ts").is_file(), stderr[-3000:]
    bare = tmp_path / "bare" / "weights.pt"
    bare.parent.mkdir()
    shutil.copyfile(weights, bare)
    code, _, stderr = _main(["export", str(bare), "--out", str(tmp_path / "c"), "--set", f"data.path={tiny_dataset}"])
    assert code == 2 and stderr.strip() == f"error: {bare} does not record its architecture (no retrain " \
                                           "result.json beside it); pass --arch ARCH"
    assert not (tmp_path / "c").exists()
    code, _, stderr = _main(["export", str(bare), "--arch", ARCH, "--out", str(tmp_path / "c"), "--json",
                             "--set", f"data.path={tiny_dataset}", "--set", "export.onnx_opset=17"])
    assert code == 0 and (tmp_path / "c" / "model.onnx").is_file(), stderr[-3000:]
