"""Serving the champion with MLflow's own server, as docs/serving.md says, answers like ``autospace predict``.

Slow: a small tuned ``autospace train`` (real Ray, MLflow on SQLite) makes the champion,
then ``mlflow models serve -m models:/autospace-model@champion --env-manager local`` runs
on 127.0.0.1 and a free port; its ``/invocations`` answer for the test split is compared
with ``autospace predict --json`` on the same images.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import load_dataset

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ARCH = "input=1x12 stem=cn_k3_c8_relu stages=ds_k3_c8_relu_nores|ir_k3_s2_e3_c12_relu head=cn_k1_c32_relu classes=4"
BIN = Path(sys.executable).parent  # the venv's: `mlflow`, and the `uvicorn` it starts from PATH


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def _cli(*args: str, timeout: float = 600) -> str:
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM the server's process group (mlflow and its uvicorn), SIGKILL what is left after 15 s."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    except ProcessLookupError:
        pass
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.killpg(server.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(server.pid, signal.SIGKILL)
    pytest.fail("a process of the server's group outlived SIGTERM")


def test_mlflow_serves_the_champion_with_the_predictions_of_autospace_predict(tiny_dataset: Path,
                                                                              tmp_path: Path) -> None:
    out = tmp_path / "train"
    printed = _cli("train", ARCH, "--out", str(out), "--set", f"data.path={tiny_dataset}",
                   "--set", "ray.num_cpus=2", "--set", "retrain.tuning_trials=2", "--set", "retrain.tuning_epochs=1",
                   "--set", "retrain.epochs=2", "--set", "retrain.batch_size=16", "--set", "export.onnx_opset=17",
                   "--set", "budget.target=1e6")
    record = json.loads((out / "train.json").read_text())
    assert record["tuned"] and len(record["retrain"]["tuning"]["trials"]) == 2
    assert record["promotion"]["decision"] == "promoted", printed
    uri = record["registry"]["tracking_uri"]
    assert uri == f"sqlite:///{out.resolve() / 'mlflow.db'}" and f"MLFLOW_TRACKING_URI={uri}" in printed

    port = _free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", "models:/autospace-model@champion", "--env-manager", "local",
         "--host", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path, env=_env(MLFLOW_TRACKING_URI=uri), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while _get(f"http://127.0.0.1:{port}/ping") != 200:
            if server.poll() is not None or time.time() > deadline:
                _stop(server)
                pytest.fail(f"the server did not come up: {server.stdout.read()[-4000:]}")
            time.sleep(0.5)
        images, _ = load_dataset(tiny_dataset).split("test", normalize=False)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=json.dumps({"inputs": images.numpy().tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            served = json.loads(response.read())
    finally:
        _stop(server)

    logits = np.asarray(served["predictions"]["logits"], dtype=np.float64)
    predicted = json.loads(_cli("predict", "--tracking-uri", uri, "--model", "models:/autospace-model@champion",
                                "--json", f"{tiny_dataset}:test"))
    assert logits.shape == (80, 4) and len(predicted) == 80
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    assert [p["index"] for p in predicted] == logits.argmax(1).tolist()
    assert [p["probability"] for p in predicted] == pytest.approx(probabilities.max(1).tolist(), abs=1e-5)
    assert len({p["index"] for p in predicted}) > 1  # a trained model, not a constant answer
