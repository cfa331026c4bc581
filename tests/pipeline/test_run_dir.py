"""Run directories are self-contained: a copied or moved one resumes as itself; its files are checked first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.run_dir import RunPaths, resume_run_dir
from tests.pipeline.finished_run import finished_run


def test_a_moved_run_directory_resumes_as_itself(tiny_dataset: Path, tmp_path: Path) -> None:
    original, moved = tmp_path / "original", tmp_path / "moved"
    finished_run(original, tiny_dataset)
    shutil.copytree(original, moved)
    shutil.rmtree(original)

    config = resume_run_dir(moved)
    assert config.out_dir == moved.resolve()
    assert yaml.safe_load((moved / "config.yaml").read_text())["out_dir"] == str(moved.resolve())
    # MLflow's store in the copy puts every artifact in the copy (runs and the experiment alike)
    client = MlflowClient(f"sqlite:///{moved.resolve() / 'mlflow.db'}")
    info = json.loads((moved / "run.json").read_text())
    assert client.get_run(info["parent_run_id"]).info.artifact_uri.startswith(moved.resolve().as_uri() + "/")
    assert client.get_experiment(info["experiment_id"]).artifact_location == (moved.resolve() / "mlartifacts").as_uri()
    assert json.loads((moved / "summary.json").read_text())["mlflow"]["tracking_uri"] == \
        f"sqlite:///{moved.resolve() / 'mlflow.db'}"
    assert not original.exists()

def test_resume_of_a_copy_leaves_the_original_untouched(tiny_dataset: Path, tmp_path: Path, ray_cluster: dict,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    original, copy = tmp_path / "original", tmp_path / "copy"
    finished_run(original, tiny_dataset)
    shutil.copytree(original, copy)
    before = {p: p.stat().st_mtime_ns for p in original.rglob("*")}

    assert main(["resume", str(copy)]) == 0
    out = capsys.readouterr().out
    assert f"run directory: {copy}\n" in out and str(copy.resolve() / "mlflow.db") in out
    assert json.loads((copy / "status.json").read_text())["phase"] == "done"
    assert {p: p.stat().st_mtime_ns for p in original.rglob("*")} == before
    assert main(["status", str(copy), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["finished"] is True


@pytest.mark.parametrize("name, content, expected", [
    ("status.json", "{not json", "status.json cannot be read"),
    ("status.json", "[1, 2]", "status.json holds a list"),
    ("evolution.json", "", "evolution.json cannot be read"),
    ("evolution.json", '{"history": 5}', "no valid generation history"),
    ("evolution.json", '{"history": [{"best_reward": "x", "champion": null}]}', "no valid generation history"),
    ("config.yaml", "out_dir: [1", "config.yaml is not valid YAML"),
    ("config.yaml", "- a list", "must hold a mapping"),
    ("config.yaml", "search: {epochs: zero}", "search.epochs"),
])
def test_status_and_resume_name_a_broken_run_file(tiny_dataset: Path, tmp_path: Path, name: str, content: str,
                                                  expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    finished_run(run, tiny_dataset, tracked=False)
    (run / name).write_text(content)
    files = sorted(run.rglob("*"))
    for command in ("status", "resume"):
        assert main([command, str(run)]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("error:") == 1 and "Traceback" not in err
    assert sorted(run.rglob("*")) == files


@pytest.mark.parametrize("name, content, expected", [
    ("summary.json", "{}", "summary.json lacks valid best, pareto_front, generations, mlflow"),
    ("summary.json", "\x00\x01", "summary.json cannot be read"),
    ("run.json", '"just a string"', "run.json holds a str"),
    ("run.json", '{"parent_run_id": 5}', "parent_run_id must be an MLflow run id"),
])
def test_resume_names_a_broken_summary_or_run_record(tiny_dataset: Path, tmp_path: Path, name: str, content: str,
                                                     expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    finished_run(run, tiny_dataset, tracked=False)
    (run / name).write_text(content)
    assert main(["resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_a_broken_evolution_state_is_refused_before_resume_starts(tiny_dataset: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    finished_run(run, tiny_dataset, tracked=False)
    RunPaths(run).summary.unlink()  # evolution not finished: resume would load the state
    assert main(["resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "evolution.json is not a valid evolution state" in err and "autospace run --out" in err


def test_a_user_error_inside_a_ray_actor_reaches_the_user_unwrapped(ray_cluster: dict) -> None:
    import ray

    from pipeline.config import ConfigError
    from pipeline.evolution_run import _result

    @ray.remote(num_cpus=0)
    class Failing:
        def run(self) -> None:
            raise ConfigError("space.file x.yaml does not exist")

    with pytest.raises(ConfigError) as caught:
        _result(Failing.remote().run.remote())
    assert str(caught.value) == "space.file x.yaml does not exist"
