"""The whole evolution on real Ray and real MLflow (SQLite): finish, agree, resume after SIGKILL, faults.

Slow (Ray trials start worker groups): run with ``pytest -m slow``; CI does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.tables import arch_id
from spaces.arch import Arch
from spaces.latency import LatencyTable
from spaces.space import SearchSpace
from spaces.supernet import space_latency_keys
from tests.spaces.tiny_space import tiny_space

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
REFERENCE = "input=1x12 stem=cn_k3_c8_relu stages=ds_k3_c8_relu_nores|ir_k3_s2_e3_c12_relu head=cn_k1_c32_relu classes=4"


def _write_config(tmp_path: Path, data: Path, generations: int = 2, deploy: bool = False,
                  budget: str = "{metric: madds, target: 3.0e5}",
                  search: str = "{epochs: 2, warmup_epochs: 1, batch_size: 64, finetune_epochs: 0}",
                  ray: str = "{num_cpus: 2, workers_per_trial: 1, cpus_per_worker: 0.45}") -> Path:
    space_file = tmp_path / "space.yaml"
    tiny_space().save(space_file)
    config = tmp_path / "config.yaml"
    config.write_text(f"""
out_dir: {tmp_path / 'run'}
data: {{path: {data}}}
space: {{file: {space_file}, reference: "{REFERENCE}"}}
budget: {budget}
search: {search}
evolution: {{generations: {generations}, spaces_per_generation: 2, population_per_layer: 4, cells_per_layer: 2}}
ray: {ray}
retrain: {{enabled: {str(deploy).lower()}, top_k: 1, epochs: 2, tuning_trials: 2, tuning_epochs: 1, batch_size: 16}}
""")
    return config


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The real CLI in its own process group (so a test can SIGKILL it with its local Ray)."""
    full_env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(process: subprocess.Popen, timeout: float = 900) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-4000:]
    return out


def _mlflow_runs(run_dir: Path) -> tuple[MlflowClient, dict, list]:
    info = json.loads((run_dir / "run.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    runs = client.search_runs([info["experiment_id"]], max_results=1000)
    return client, info, runs


def test_run_then_summary_and_mlflow_agree(tiny_dataset: Path, tmp_path: Path) -> None:
    out = _finish(_cli("run", "--config", str(_write_config(tmp_path, tiny_dataset))))
    run_dir = tmp_path / "run"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert Arch.parse(summary["best"]["arch"]).num_classes == 4 and 0 <= summary["best"]["val_accuracy"] <= 1
    # tables name archs by their 8-hex id (the full strings are in summary.json and with --wide)
    assert arch_id(summary["best"]["arch"]) in out and (run_dir / "pareto.png").stat().st_size > 1000
    client, info, runs = _mlflow_runs(run_dir)
    parent = client.get_run(info["parent_run_id"])
    assert parent.info.status == "FINISHED" and summary["mlflow"]["run_id"] == info["parent_run_id"]
    assert parent.data.tags["autospace.best_arch"] == summary["best"]["arch"]
    # continuity: generation 1 re-scored the elite and started every search from generation 0's weight pool
    gen1 = json.loads((run_dir / "generations" / "gen-1" / "results.json").read_text())
    assert (run_dir / "generations" / "gen-0" / "pool.pt").exists()
    assert all(e["result"]["warm_started"] > 0 for e in gen1)
    state = json.loads((run_dir / "evolution.json").read_text())
    assert state["history"][1]["spaces"][0]["rescored"] and len(state["elite"][0]["rewards"]) >= 1
    assert parent.data.metrics["final_val_accuracy"] == pytest.approx(summary["best"]["val_accuracy"])
    generations = sorted((r for r in runs if r.data.tags.get("autospace.kind") == "generation"),
                         key=lambda r: int(r.data.tags["autospace.generation"]))
    assert [int(r.data.tags["autospace.generation"]) for r in generations] == [0, 1]
    for run, entry in zip(generations, summary["generations"]):
        assert run.data.metrics["best_reward"] == pytest.approx(entry["best_reward"])
    spaces = [r for r in runs if r.data.tags.get("autospace.kind") == "space"]
    assert len(spaces) == 4 and all(r.info.status == "FINISHED" for r in spaces)
    for run in spaces:
        assert {"reward", "reward_se", "val_accuracy", "madds", "params"} <= set(run.data.metrics)
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"space.json", "derived_arch.json", "cell_scores.json"} <= names
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"summary.json", "pareto.png",
                                                                           "evolution.json"}
    status = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", str(run_dir), "--json"], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert json.loads(status.stdout)["generations_done"] == 2 and json.loads(status.stdout)["finished"]


def test_sigkill_after_first_generation_then_resume(tiny_dataset: Path, tmp_path: Path) -> None:
    config = _write_config(tmp_path, tiny_dataset, generations=3)
    run_dir = tmp_path / "run"
    process = _cli("run", "--config", str(config))
    deadline = time.time() + 600
    while time.time() < deadline:
        state = run_dir / "evolution.json"
        if state.exists() and json.loads(state.read_text())["generation"] >= 1:
            break
        assert process.poll() is None, process.communicate()[0][-3000:]
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = json.loads((run_dir / "evolution.json").read_text())["generation"]
    assert 1 <= done_before < 3
    _finish(_cli("resume", str(run_dir)))
    state = json.loads((run_dir / "evolution.json").read_text())
    assert [h["generation"] for h in state["history"]] == [0, 1, 2]
    _, _, runs = _mlflow_runs(run_dir)
    logged = sorted(int(r.data.tags["autospace.generation"]) for r in runs
                    if r.data.tags.get("autospace.kind") == "generation")
    assert logged == [0, 1, 2]  # each generation exactly once
    assert (run_dir / "summary.json").exists()


def test_a_faulty_trial_is_retried_and_the_run_completes(tiny_dataset: Path, tmp_path: Path) -> None:
    config = _write_config(tmp_path, tiny_dataset, generations=1)
    out = _finish(_cli("run", "--config", str(config), env={"AUTOSPACE_FAULT_SPACE": "0"}))
    run_dir = tmp_path / "run"
    results = json.loads((run_dir / "generations" / "gen-0" / "results.json").read_text())
    assert all(r["ok"] for r in results), out[-3000:]
    assert (run_dir / "generations" / "gen-0" / "space-0" / "fault-injected").exists()


def test_run_under_a_latency_budget_goes_all_the_way_to_a_served_champion(tiny_dataset: Path, tmp_path: Path) -> None:
    # onnxruntime latency (the default runtime) prices the search, ranks spaces and gates the champion
    budget = "{metric: latency, target: 2.0}"
    out = _finish(_cli("run", "--config", str(_write_config(tmp_path, tiny_dataset, generations=1, deploy=True,
                                                            budget=budget))))
    run_dir = tmp_path / "run"
    summary = json.loads((run_dir / "summary.json").read_text())
    table = LatencyTable.load(run_dir / "latency_table.onnxruntime.json", runtime="onnxruntime", batch=1)
    assert set(space_latency_keys(SearchSpace.from_dict(summary["learned_space"]))) <= set(table.entries)
    assert summary["best"]["predicted_latency_ms"] == pytest.approx(table.predict(Arch.parse(summary["best"]["arch"])))
    final = summary["final_search"]
    assert final["expected_latency_ms"] > 0 and final["history"][-1]["expected_latency_ms"] > 0
    deployed = json.loads((run_dir / "deploy.json").read_text())
    model = deployed["models"][0]
    # the champion rule's budget check read the exported model's onnxruntime latency (batch 1)
    assert model["promotion"]["budget_metric"] == "latency"
    assert model["promotion"]["cost"] == pytest.approx(model["export"]["latency_ms"]["onnxruntime"]["1"])
    assert model["retrain"]["test_accuracy"] > 0.4  # 4 classes: chance is 0.25
    assert model["export"]["parity_max_abs_diff"]["onnx"] <= 1e-4
    assert model["promotion"]["decision"] == "promoted"  # the first model of a registry becomes champion
    assert arch_id(model["arch"]) in out and "promoted" in out
    client, info, runs = _mlflow_runs(run_dir)
    champion = client.get_model_version_by_alias("autospace-model", "champion")
    assert str(champion.version) == str(model["version"])
    assert float(champion.tags["test_accuracy"]) == pytest.approx(model["retrain"]["test_accuracy"])
    assert any(r.data.tags.get("autospace.kind") == "retrain" for r in runs)
    assert client.get_run(info["parent_run_id"]).info.status == "FINISHED"
    predicted = subprocess.run([sys.executable, "-m", "pipeline.cli", "predict", "--model",
                                "models:/autospace-model@champion", "--run-dir", str(run_dir), "--json",
                                f"{tiny_dataset}:test"], cwd=REPO, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    predictions = json.loads(predicted.stdout)
    assert len(predictions) == 80 and {p["class_name"] for p in predictions} <= {"a", "b", "c", "d"}
    _readme_follow_ups_work_on(run_dir, tiny_dataset, client)


README_RUN, README_DATA = "runs/quickstart", "~/.cache/autospace/fashion-mnist.parquet"


def readme_follow_ups() -> list[str]:
    """The ``autospace`` commands of the README block after "Then, for example:", continuation lines joined."""
    text = (REPO / "README.md").read_text()
    assert "Then, for example:\n\n```bash\n" in text, "the README's follow-up block moved; update this test"
    block = text.split("Then, for example:\n\n```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.replace("\\\n", " ").splitlines() if line.startswith(".venv/bin/autospace ")]


def _readme_follow_ups_work_on(run_dir: Path, data: Path, client: MlflowClient) -> None:
    """Each follow-up as the README writes it (in bash, from the clone's root), on this run and its data."""
    commands = {line.split()[1]: line for line in readme_follow_ups()}
    assert set(commands) == {"status", "predict", "train"}, commands
    assert all(README_RUN in line for line in commands.values()) and README_DATA in commands["predict"]

    def shell(name: str) -> str:
        line = commands[name].replace(README_RUN, str(run_dir)).replace(README_DATA, str(data))
        done = subprocess.run(["bash", "-c", line], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}, timeout=600)
        assert done.returncode == 0 and "Traceback" not in done.stderr and "\nerror:" not in f"\n{done.stderr}", \
            f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    champion = client.get_model_version_by_alias("autospace-model", "champion")
    assert f"registry champion  autospace-model v{champion.version} (promoted" in shell("status")
    rows = [line.split("\t") for line in shell("predict").splitlines()]
    assert len(rows) == 10 and all(len(r) == 3 and r[1] in {"a", "b", "c", "d"} and 0 < float(r[2]) <= 1 for r in rows)

    decisions = len((run_dir / "promotions.jsonl").read_text().splitlines())
    printed = shell("train")  # the README's RUN_DIR:N: the run's config, registry and promotion log
    [record_file] = (run_dir / "train").glob("*/train.json")
    record = json.loads(record_file.read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert record["arch"] == summary["pareto_front"][0]["arch"] and len(record["retrain"]["history"]) == 8
    assert record["registry"]["tracking_uri"] == f"sqlite:///{run_dir.resolve() / 'mlflow.db'}"
    assert record["version"] != str(champion.version) and f"v{record['version']}" in printed
    assert len((run_dir / "promotions.jsonl").read_text().splitlines()) == decisions + 1
    now = client.get_model_version_by_alias("autospace-model", "champion").version
    assert str(now) == (record["version"] if record["promotion"]["promoted"] else str(champion.version))
    assert f"registry champion  autospace-model v{now} (" in shell("status")


def _fail(process: subprocess.Popen, code: int, timeout: float = 900) -> str:
    """The run's output once it ended with ``code``; exactly one ``error:`` line and no traceback in it."""
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == code, out[-4000:]
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in out, out[-4000:]
    return errors[0]


def _status(run_dir: Path) -> dict:
    status = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", str(run_dir), "--json"], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert status.returncode == 0, status.stderr
    return json.loads(status.stdout)


def test_failed_searches_end_the_run_non_zero_and_resume_goes_on_once_fixed(tiny_dataset: Path,
                                                                           tmp_path: Path) -> None:
    config = _write_config(tmp_path, tiny_dataset, generations=1)
    run_dir = tmp_path / "run"
    tampered = run_dir / "generations" / "gen-0" / "space-0" / "search.pt"
    tampered.parent.mkdir(parents=True)
    tampered.write_bytes(b"PK\x03\x04 tampered")
    # a tampered generation checkpoint: one attempt (ray.max_failures is 1), exit 2, the file named
    error = _fail(_cli("run", "--config", str(config)), 2)
    assert error.startswith(f"error: generation 0, space 0: CheckpointError: search checkpoint {tampered} "
                            "cannot be read"), error
    assert len((tampered.parent / "attempts").read_text().splitlines()) == 1
    assert not (run_dir / "evolution.json").exists()  # the generation is not counted as done
    status = _status(run_dir)
    assert status["status"]["phase"] == "failed" and status["status"]["error"] in error
    client, info, _ = _mlflow_runs(run_dir)
    parent = client.get_run(info["parent_run_id"])
    assert parent.info.status == "FAILED" and parent.data.tags["autospace.error"] in error

    # a truncated final-search checkpoint is refused, not dropped
    tampered.unlink()
    final_checkpoint = run_dir / "final" / "space-0" / "search.pt"
    final_checkpoint.parent.mkdir(parents=True)
    whole = (run_dir / "generations" / "gen-0" / "space-1" / "search.pt").read_bytes()
    final_checkpoint.write_bytes(whole[:len(whole) // 2])
    error = _fail(_cli("resume", str(run_dir)), 2)
    assert error.startswith(f"error: the final search, space 0: CheckpointError: search checkpoint "
                            f"{final_checkpoint} cannot be read"), error
    assert json.loads((run_dir / "evolution.json").read_text())["generation"] == 1
    assert not (run_dir / "summary.json").exists()

    # a final search that keeps failing ends the run with status 1 and its cause
    final_checkpoint.unlink()
    error = _fail(_cli("resume", str(run_dir), env={"AUTOSPACE_FAULT_SPACE_ALWAYS": "0"}), 1)
    assert error.startswith("error: the final search failed: RuntimeError: injected fault (always)"), error
    assert not (run_dir / "summary.json").exists()

    _finish(_cli("resume", str(run_dir)))
    status = _status(run_dir)
    assert status["finished"] and "error" not in status["status"]
    client, info, runs = _mlflow_runs(run_dir)
    parent = client.get_run(info["parent_run_id"])
    assert parent.info.status == "FINISHED" and "autospace.error" not in parent.data.tags
    assert [r.data.tags["autospace.generation"] for r in runs if r.data.tags.get("autospace.kind") == "generation"] \
        == ["0"]


def _kill_when(process: subprocess.Popen, ready, timeout: float = 900) -> None:
    """SIGKILL the CLI's process group (the CLI, its local Ray, every trial) once ``ready()`` holds."""
    deadline = time.time() + timeout
    while not ready():
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.time() < deadline, "the stage to interrupt never started"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_sigkill_during_the_search_and_during_the_retrain_then_resume_does_each_stage_once(
        tiny_dataset: Path, tmp_path: Path) -> None:
    config = _write_config(tmp_path, tiny_dataset, generations=1, deploy=True).read_text()
    config_file = tmp_path / "drill.yaml"
    config_file.write_text(config.replace("tuning_trials: 2", "tuning_trials: 3"))
    run_dir = tmp_path / "run"
    search_checkpoints = run_dir / "generations" / "gen-0"
    _kill_when(_cli("run", "--config", str(config_file)),
               lambda: any(search_checkpoints.glob("space-*/search.pt")))  # an epoch in, mid-search
    assert not (run_dir / "evolution.json").exists()

    retrain_dir = run_dir / "retrain"
    _kill_when(_cli("resume", str(run_dir)), lambda: any(retrain_dir.glob("arch-*/tuning-trials.json")))
    [record] = retrain_dir.glob("arch-*/tuning-trials.json")
    kept = json.loads(record.read_text())["trials"]
    assert kept and not (run_dir / "deploy.json").exists()

    _finish(_cli("resume", str(run_dir)))
    status = _status(run_dir)
    assert status["finished"] and status["generations_done"] == 1
    tuning = json.loads(record.with_name("tuning.json").read_text())
    assert len(tuning["trials"]) == 3 and tuning["trials"][:len(kept)] == kept  # finished trials kept
    deployed = json.loads((run_dir / "deploy.json").read_text())
    [model] = deployed["models"]
    client, info, runs = _mlflow_runs(run_dir)
    assert client.get_run(info["parent_run_id"]).info.status == "FINISHED"
    kinds = [r.data.tags.get("autospace.kind") for r in runs]
    assert kinds.count("generation") == 1 and kinds.count("space") == 2 and kinds.count("retrain") == 1
    versions = client.search_model_versions("name='autospace-model'")
    assert [str(v.version) for v in versions] == [str(model["version"])]  # registered once
    assert str(client.get_model_version_by_alias("autospace-model", "champion").version) == str(model["version"])
