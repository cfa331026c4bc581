"""The autospace CLI end to end, in-process: real files, real output, exit codes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.tables import arch_id
from spaces.interchange import reference_models

SHARED_REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "paper_models.json"


def _status_lines(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """``autospace status`` output as {key: value}: keys are words with single spaces, then 2+ spaces."""
    return dict(re.split(r" {2,}", line, maxsplit=1) for line in capsys.readouterr().out.splitlines())


def test_cost_json_on_the_packaged_reference_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = SHARED_REFERENCE if SHARED_REFERENCE.exists() else None
    if source is None:
        from importlib import resources
        source = tmp_path / "models.json"
        source.write_text(resources.files("spaces").joinpath("data/paper_models.json").read_text())
    assert main(["cost", str(source), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in records] == [m.name for m in reference_models()]
    assert all(r["matches_reference"] for r in records)
    assert records[0]["madds"] == 300_774_272 and records[0]["params"] == 3_504_872


def test_cost_of_an_arch_string_with_layers(capsys: pytest.CaptureFixture[str]) -> None:
    arch = "input=1x8 stem=cn_k3_c8 stages=ds_k3_c8 head= classes=2"
    assert main(["cost", arch, "--layers"]) == 0
    out = capsys.readouterr().out
    # stem 8*8*8*1*9 = 4608; dw 8*8*8*9 = 4608; pwl 8*8*8*8 = 4096; fc 16
    assert "13,328" in out and "stage 0 block 0" in out and "classifier" in out


def test_cost_reads_text_and_project_json_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arch_text = "input=1x8 stem=cn_k3_c8 stages=ds_k3_c8 head= classes=2"
    (tmp_path / "a.txt").write_text(arch_text + "\n")
    from spaces.arch import Arch
    (tmp_path / "a.json").write_text(Arch.parse(arch_text).to_json())
    for name in ("a.txt", "a.json"):
        assert main(["cost", str(tmp_path / name), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["madds"] == 13_328


@pytest.mark.parametrize("arg, expected", [
    ("input=1x8 stem=cn_k4_c8 stages=ds_k3_c8 head= classes=2", "kernel k=4 must be odd"),
    ("input=1x8 stem=cn_k3_c8 stages=xx_k3_c8 head= classes=2", "unknown block type 'xx'"),
    ("nonexistent.json", "neither a file nor an arch string"),
])
def test_cost_errors_exit_2_with_a_message(arg: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", arg]) == 2
    assert expected in capsys.readouterr().err


def test_run_refuses_a_directory_holding_a_run(tiny_dataset: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "evolution.json").write_text("{}")
    assert main(["run", "--set", f"data.path={tiny_dataset}", "--out", str(tmp_path / "run")]) == 2
    assert "autospace resume" in capsys.readouterr().err


def test_status_and_resume_need_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_status_calls_the_evolution_best_an_arch_not_the_champion(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    best = "input=1x8 stem=cn_k3_c8 stages=ds_k3_c8 head= classes=2"
    (tmp_path / "config.yaml").write_text("{}")
    (tmp_path / "status.json").write_text(json.dumps({"phase": "evolution", "generations": 3, "running_trials": 2}))
    history = [{"best_reward": 0.5, "champion": "older"}, {"best_reward": 0.75, "champion": best}]
    (tmp_path / "evolution.json").write_text(json.dumps({"history": history}))  # the state's key, as old runs wrote it
    assert main(["status", str(tmp_path)]) == 0
    lines = _status_lines(capsys)
    assert "best arch" in lines and "champion" not in str(lines)  # "champion" is the registry alias only
    assert lines["generations done"] == "2/3" and lines["trials running"] == "2"
    assert lines["best reward"] == "0.7500" and lines["best arch"].startswith(arch_id(best) + "  ")
    assert main(["status", str(tmp_path), "--wide"]) == 0
    assert best in capsys.readouterr().out
    assert main(["status", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["best_arch"] == best and "champion" not in info and info["best_reward"] == 0.75


def test_run_with_a_bad_config_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--set", "budget.metric=flops"]) == 2
    assert "budget.metric" in capsys.readouterr().err


def test_search_command_writes_result_and_resumes(tiny_dataset: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from spaces.arch import Arch
    from spaces.space import SearchSpace
    from tests.spaces.tiny_space import tiny_space

    space_file = tmp_path / "space.yaml"
    tiny_space().save(space_file)
    args = ["search", "--space", str(space_file), "--out", str(tmp_path / "run"), "--set", f"data.path={tiny_dataset}",
            "--set", "search.epochs=2", "--set", "search.batch_size=64", "--set", "budget.target=3e5"]
    assert main(args) == 0
    captured = capsys.readouterr()
    result = json.loads((tmp_path / "run" / "search" / "result.json").read_text())
    arch = Arch.parse(result["arch"])
    searched_space = SearchSpace.load(tmp_path / "run" / "search" / "space.yaml")
    assert searched_space.contains(arch) and searched_space.resolutions == (8, 12)
    assert len(result["history"]) == 2
    table = captured.out.splitlines()[:3]
    assert arch_id(result["arch"]) in table[2] and all(len(line) <= 100 for line in table)
    # not a terminal: one progress line per epoch, no bar redraws
    progress = captured.err.splitlines()
    assert "\r" not in captured.err and [line.split()[2] for line in progress] == ["1/2", "2/2"]
    assert all(line.split()[1] == "search" and "loss=" in line for line in progress)
    # a second call finds the finished checkpoint and reproduces the result without training again
    assert main([*args, "--wide"]) == 0
    assert result["arch"] in capsys.readouterr().out.splitlines()[2]
    again = json.loads((tmp_path / "run" / "search" / "result.json").read_text())
    assert again["arch"] == result["arch"] and again["history"] == result["history"]


def test_search_under_a_latency_budget_measures_the_table_first(tiny_dataset: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from spaces.latency import LatencyTable
    from tests.spaces.tiny_space import tiny_space

    space_file = tmp_path / "space.yaml"
    tiny_space().save(space_file)
    args = ["search", "--space", str(space_file), "--out", str(tmp_path / "run"), "--set", f"data.path={tiny_dataset}",
            "--set", "search.epochs=2", "--set", "search.batch_size=64", "--set", "search.finetune_epochs=0",
            "--set", "budget.metric=latency", "--set", "budget.target=0.2", "--set", "budget.latency_runtime=torch"]
    assert main(args) == 0
    assert "entries measured on torch" in capsys.readouterr().out
    result = json.loads((tmp_path / "run" / "search" / "result.json").read_text())
    table = LatencyTable.load(tmp_path / "run" / "search" / "latency_table.torch.json", runtime="torch")
    from spaces.arch import Arch
    assert result["predicted_latency_ms"] == pytest.approx(table.predict(Arch.parse(result["arch"])))
    assert result["expected_latency_ms"] > 0
    # a table file that holds another runtime's figures is refused, naming both and the fix
    search_dir = tmp_path / "run" / "search"
    (search_dir / "latency_table.onnxruntime.json").write_text((search_dir / "latency_table.torch.json").read_text())
    assert main([*args[:-1], "budget.latency_runtime=onnxruntime", "--set", "search.epochs=3"]) == 2
    err = capsys.readouterr().err
    assert "runtime='torch'" in err and "delete the file" in err


def test_fbnet_loss_with_a_sub_microsecond_latency_target_is_a_config_error(
        tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--set", f"data.path={tiny_dataset}", "--set", "budget.metric=latency",
                 "--set", "budget.target=0.0005", "--set", "search.cost_loss=fbnet"]) == 2  # hinge is the default
    err = capsys.readouterr().err
    assert "budget.target" in err and "hinge" in err


@pytest.mark.parametrize("content, expected", [
    (b'{"format": "autospace-arch/1", "models": 5}', "models=5 must be a list of model mappings"),
    (b'{"format": "autospace-arch/1", "models": [5]}', "a model entry is a mapping"),
    (b'{"name": "m", "input_size": 8, "num_classes": 2, "stem": 5, "blocks": []}', "m: stem=5 must be a mapping"),
    (b"[5]", "holds a JSON list; an architecture file is a mapping"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is not a text file"),
    (b"x" * 1_000_001, "an architecture file is at most 1,000,000"),
])
def test_cost_refuses_malformed_files_in_one_line(tmp_path: Path, content: bytes, expected: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "arch.json"
    path.write_bytes(content)
    assert main(["cost", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and len(err) < 600


def test_status_of_a_run_whose_process_died_says_stopped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket
    import subprocess
    import sys

    from pipeline.run_dir import record_driver

    (tmp_path / "config.yaml").write_text("{}")
    (tmp_path / "status.json").write_text(json.dumps({"phase": "evolution", "generations": 3, "running_trials": 2}))
    record_driver(tmp_path)  # this process: alive
    assert main(["status", str(tmp_path)]) == 0
    lines = _status_lines(capsys)
    assert lines["phase"] == "evolution" and lines["trials running"] == "2"
    assert main(["status", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["running"] is True

    # a real process that ran the run and is gone
    dead = subprocess.run([sys.executable, "-c", "from pathlib import Path; from pipeline.run_dir import "
                           f"record_driver; record_driver(Path({str(tmp_path)!r}))"], check=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert dead.returncode == 0
    assert main(["status", str(tmp_path)]) == 0
    lines = _status_lines(capsys)
    assert lines["phase"].startswith("not running (last seen ") and "was: evolution" in lines["phase"]
    assert f"autospace resume {tmp_path}" in lines["phase"] and lines["trials running"] == "0"
    assert main(["status", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["running"] is False

    # this pid, but a process started at another time: a reused pid is not the run
    status = json.loads((tmp_path / "status.json").read_text())
    status["driver"] = {**status["driver"], "pid": os.getpid()}
    (tmp_path / "status.json").write_text(json.dumps(status))
    assert main(["status", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["running"] is False

    # another host: not checkable from here, and said so
    status["driver"] = {"pid": 1, "host": socket.gethostname() + "-elsewhere", "start": 1}
    (tmp_path / "status.json").write_text(json.dumps(status))
    assert main(["status", str(tmp_path)]) == 0
    assert "-elsewhere, process 1: not checked from here" in _status_lines(capsys)["phase"]


def test_status_names_the_registry_champion_apart_from_the_best_arch(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    run = Path(shutil.copytree(Path(__file__).resolve().parents[1] / "fixtures" / "quickstart-run", tmp_path / "r"))
    assert main(["status", str(run)]) == 0
    lines = _status_lines(capsys)
    best = json.loads((run / "summary.json").read_text())["best"]["arch"]
    assert lines["phase"] == "finished" and lines["best arch"].startswith(arch_id(best))
    # the quick-start promoted v1, then v2 (more accurate): v2 holds the alias
    last = json.loads((run / "promotions.jsonl").read_text().splitlines()[-1])
    assert last["version"] == "2" and last["promoted"]
    assert lines["registry champion"].startswith(f"autospace-model v2 (promoted {last['time'][:19]}")
    assert main(["status", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["registry_champion"]["version"] == "2"
    kept = [json.loads(line) for line in (run / "promotions.jsonl").read_text().splitlines()]
    (run / "promotions.jsonl").write_text("".join(json.dumps({**d, "promoted": False}) + "\n" for d in kept))
    assert main(["status", str(run)]) == 0
    assert _status_lines(capsys)["registry champion"].startswith("none: no version passed the promotion rule")
    (run / "promotions.jsonl").write_text("{not json\n")
    assert main(["status", str(run)]) == 2
    assert "promotions.jsonl line 1 is not JSON" in capsys.readouterr().err


def test_status_shows_the_runs_best_once_the_final_search_found_it(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    run = Path(shutil.copytree(Path(__file__).resolve().parents[1] / "fixtures" / "quickstart-run", tmp_path / "r"))
    summary = json.loads((run / "summary.json").read_text())
    final = summary["final_search"]
    summary["best"] = {**summary["best"], "arch": final["arch"], "reward": 0.99, "from": "final search"}
    (run / "summary.json").write_text(json.dumps(summary))
    assert main(["status", str(run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["best_arch"] == final["arch"] and info["best_reward"] == 0.99
    (run / "summary.json").unlink()  # before the final search: the evolution's best so far
    assert main(["status", str(run), "--json"]) == 0
    history = json.loads((run / "evolution.json").read_text())["history"]
    assert json.loads(capsys.readouterr().out)["best_arch"] == history[-1]["champion"]


def test_status_shows_the_time_the_run_worked_against_its_budget(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.yaml").write_text("wall_time_minutes: 150\n")
    (tmp_path / "status.json").write_text(json.dumps({"phase": "retrain"}))
    assert main(["status", str(tmp_path)]) == 0
    assert "time worked" not in _status_lines(capsys)  # no clock saved yet
    (tmp_path / "clock.json").write_text(json.dumps({"seconds": 5430}))
    assert main(["status", str(tmp_path)]) == 0
    assert _status_lines(capsys)["time worked"] == "90.5 min of wall_time_minutes 150 (resumes count only work)"
    assert main(["status", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["worked_seconds"] == 5430
