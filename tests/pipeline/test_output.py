"""What the CLI prints for people: 100-column tables, log-friendly progress, third-party noise only on request."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import torch

from pipeline.progress import Progress
from pipeline.quiet import quiet_third_party
from pipeline.run_tables import format_run_summary
from pipeline.tables import TABLE_WIDTH, arch_id
from tests.pipeline.finished_run import finished_run

REPO = Path(__file__).resolve().parents[2]
LONG = ("input=1x28 stem=cn_k3_c16_relu6 stages=ds_k3_c16_relu6_nores|ir_r2_k5_s2_e6_c24_se0.25_hswish,"
        "ir_k3_e3_c24_relu6|ir_r3_k7_s2_e4_c40_se0.25_swish|ir_r2_k3_s2_e6_c80_relu6,ir_k5_e6_c80_se0.25_hswish "
        "head=cn_k1_c256_relu6 classes=10")
OTHER = LONG.replace("input=1x28", "input=1x24")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _summary(out: Path) -> dict:
    point = {"arch": LONG, "val_accuracy": 0.8123, "madds": 1_234_567, "params": 45_678, "predicted_latency_ms": 0.31,
             "generation": 2}
    cheap = {**point, "arch": OTHER, "val_accuracy": 0.78, "madds": 654_321, "final": True}
    promotion = {"decision": "promoted", "reasons": ["first version within the budget"]}
    model = {"arch": LONG, "retrain": {"test_accuracy": 0.8201}, "predicted_latency_ms": 0.31, "version": "3",
             "export": {"latency_ms": {"torch": {"1": 0.52}, "onnxruntime": {"1": 0.29}}}, "promotion": promotion}
    return {"best": {**point, "reward": 0.8, "from": "generation 2"},
            "generations": [{"generation": g, "best_reward": 0.8, "mean_reward": 0.7, "champion": LONG}
                            for g in range(3)],
            "pareto_front": [cheap, point],
            "mlflow": {"run_id": "0" * 32, "experiment_id": "1", "tracking_uri": f"sqlite:///{out}/mlflow.db"},
            "deploy": {"models": [model, {**model, "arch": OTHER, "version": "4",
                                          "promotion": {"decision": "kept", "reasons": []}}]}}


def test_the_run_summary_fits_100_columns_with_ids_and_wide_has_the_strings(tmp_path: Path) -> None:
    text = format_run_summary(_summary(tmp_path), tmp_path)
    assert LONG not in text and OTHER not in text
    assert text.count(arch_id(LONG)) == 3 + 1 + 1 + 1  # generations, front, best line, deployed model
    for line in text.splitlines():
        assert len(line.replace(str(tmp_path), "")) <= TABLE_WIDTH, line
    assert "v3" in text and "promoted" in text and "kept" in text and "0.2900" in text
    front = text.split("\n\n")[1].splitlines()  # the # column numbers the points as `autospace train RUN:N` does
    assert front[0].startswith("#  Pareto front") and [line.split()[:2] for line in front[2:4]] == \
        [["0", arch_id(OTHER)], ["1", arch_id(LONG)]]
    assert front[4] == f"(retrain one of them: autospace train {tmp_path}:#)"
    wide = format_run_summary(_summary(tmp_path), tmp_path, wide=True)
    assert wide.count(LONG) == 6 and arch_id(LONG) not in wide


def test_progress_off_a_terminal_prints_one_line_per_change() -> None:
    stream = io.StringIO()
    bar = Progress(3, "generations", "gen", stream=stream)
    bar.update(0, phase="starting", trials=0)
    bar.update(0, phase="starting", trials=0)  # the same status polled again: nothing
    bar.update(0, phase="evolution", trials=2)
    bar.update(1, phase="evolution", trials=2)
    bar.write("a message")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 4
    assert [line.split("] ", 1)[1] for line in lines[:3]] == [
        "generations 0/3  phase=starting trials=0", "generations 0/3  phase=evolution trials=2",
        "generations 1/3  phase=evolution trials=2"]
    assert lines[3] == "a message"


def test_progress_on_a_terminal_redraws_once_per_update() -> None:
    stream = _Terminal()
    bar = Progress(3, "generations", "gen", stream=stream)
    before = stream.getvalue().count("\r")
    for n in range(3):
        bar.update(n, phase="evolution", trials=2)
    assert stream.getvalue().count("\r") - before == 3  # tqdm's set_postfix would redraw a second time
    assert "phase=evolution" in stream.getvalue()
    bar.close()


def test_disabled_progress_prints_nothing() -> None:
    stream = io.StringIO()
    Progress(2, "search", "epoch", stream=stream, enabled=False).update(1, loss="0.5")
    assert stream.getvalue() == ""


def _torchscript_warnings(tmp_path: Path) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "m.pt"))
    return [str(w.message) for w in caught]


def test_third_party_deprecations_are_silenced_unless_verbose(tmp_path: Path) -> None:
    import logging

    with warnings.catch_warnings():
        quiet_third_party(verbose=False)
        assert _torchscript_warnings(tmp_path) == []
        assert logging.getLogger("ray").level == logging.ERROR and logging.getLogger("mlflow").level == logging.ERROR
        quiet_third_party(verbose=True)
        assert any("torch.jit.save" in message and "deprecated" in message
                   for message in _torchscript_warnings(tmp_path))
        assert logging.getLogger("ray").level == logging.INFO


_MANY_WORKERS = """
import sys, time
from pipeline.quiet import quiet_third_party
quiet_third_party(verbose=sys.argv[1] == "--verbose")
import ray
ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)

@ray.remote(num_cpus=0)
class Idle:
    def ping(self) -> int:
        return 1

actors = [Idle.remote() for _ in range(6)]
ray.get([actor.ping.remote() for actor in actors])
time.sleep(3)  # the raylet's notice reaches the driver through an asynchronous listener
ray.shutdown()
"""


def test_the_raylets_worker_pool_notice_is_shown_only_with_verbose() -> None:
    """Six workers on a 1-CPU Ray are 4x its start-up concurrency: the raylet's notice, printed on stdout by Ray.

    The raylet discounts 2 x ``max_io_workers`` (4 by default) from its count; with
    none, six actors are enough to trigger the notice.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", "RAY_max_io_workers": "0"}
    env.pop("RAY_DEDUP_LOGS_SKIP_REGEX", None)
    printed = {}
    for flag in ("", "--verbose"):
        done = subprocess.run([sys.executable, "-c", _MANY_WORKERS, flag], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        printed[flag] = done.stdout + done.stderr
    notice = "worker processes have been started on node"
    assert notice in printed["--verbose"]
    assert notice not in printed[""]


def test_resume_off_a_terminal_without_and_with_verbose(tiny_dataset: Path, tmp_path: Path) -> None:
    """A real Ray start in a real process: its start-up log only with --verbose; progress as plain lines."""
    run = tmp_path / "run"
    finished_run(run, tiny_dataset)
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    outputs = {}
    for flag in ([], ["--verbose"]):
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "resume", str(run), *flag], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        outputs[bool(flag)] = done
    quiet, verbose = outputs[False], outputs[True]
    assert "Started a local Ray instance" not in quiet.stderr + quiet.stdout
    assert "Started a local Ray instance" in verbose.stderr
    assert "\r" not in quiet.stderr
    progress = [line for line in quiet.stderr.splitlines() if "] generations " in line]
    assert len(progress) == len(set(line.split("] ", 1)[1] for line in progress))  # each state once
    for line in quiet.stdout.splitlines():
        assert len(line.replace(str(run), "")) <= TABLE_WIDTH, line


def test_every_command_takes_verbose_after_its_name() -> None:
    import argparse

    from pipeline.cli import build_parser

    def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], object]]:
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups:
            return [(path, parser)]
        return [leaf for g in groups for name, sub in g.choices.items() for leaf in leaves(sub, (*path, name))]

    found = leaves(build_parser(), ())
    assert {path for path, _ in found} >= {("run",), ("status",), ("report",), ("data", "import"), ("predict",)}
    for path, parser in found:
        assert any("--verbose" in action.option_strings for action in parser._actions), path


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    # `autospace predict ... | head` on a large split: head exits after 10 lines and the pipe closes
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "cost", LONG], cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # before the command has written anything (it takes seconds to start)
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 141 and stderr == ""  # 128 + SIGPIPE, as a Unix tool ends
