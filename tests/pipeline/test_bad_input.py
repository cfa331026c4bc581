"""The bad-input matrix: every command x malformed inputs -> exit 2, one ``error:`` line, nothing written.

In-process through ``pipeline.cli.main`` (no subprocess, no Ray start: input errors are found before
either), so the whole matrix runs in seconds. Each case names the command line (built from the files
below) and a fragment the one error line must contain: the field or file at fault.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Callable

import pytest
import ray
import torch

from pipeline.cli import main
from tests.pipeline.finished_run import finished_run
from tests.spaces.tiny_space import TINY_SPACE

MISMATCHED_REFERENCE = "input=1x12 stem=cn_k3_c8_relu stages=ds_k3_c8_relu head=cn_k1_c32_relu classes=4"
TRAIN_ARCH = "input=1x12 stem=cn_k3_c8_relu stages=ds_k3_c8_relu head=cn_k1_c32_relu classes=4"
PAPER_MODELS = str(Path(__file__).resolve().parents[2] / "spaces" / "data" / "paper_models.json")


def _torch_bytes(value: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _space(**changes: object) -> str:
    return json.dumps({**TINY_SPACE, **changes})


INPUT_FILES: dict[str, bytes] = {
    "broken.yaml": b"search: {epochs: [1",
    "list.yaml": b"- search\n- budget\n",
    "binary.yaml": b"\x89PNG\r\n\x1a\n\xff\xfe\x00",
    "typo.yaml": b"serch: {epochs: 2}\n",
    "space_broken.yaml": b"stages: [1",
    "space_broken.json": b"{\"stages\": ",
    "space_widths.json": _space(stages=[{**TINY_SPACE["stages"][0], "widths": ["a", "b"]}]).encode(),
    "space_stages5.json": _space(stages=5).encode(),
    "space_stages_x.json": _space(stages=["x"]).encode(),
    "space_tiny.json": _space().encode(),
    "models5.json": b'{"format": "autospace-arch/1", "models": 5}',
    "models_list5.json": b'{"format": "autospace-arch/1", "models": [5]}',
    "stem5.json": b'{"name": "m", "input_size": 8, "num_classes": 2, "stem": 5, "blocks": []}',
    "arch.bin": b"\x00\x01\x02\xff" * 64,
    "huge.txt": b"x" * 2_000_000,
    "not_parquet.parquet": b"PAR1 but not really",
    "a_file": b"I am a file, not a directory",
    "list.pt": _torch_bytes([1, 2, 3]),
    "pickled.pt": _torch_bytes({"conv": Path("not a tensor")}),  # refused by weights_only, never unpickled
    "no_arch.pt": _torch_bytes({"w": torch.zeros(2)}),
    "front_run/config.yaml": b"{}\n",
    "front_run/summary.json": json.dumps({"pareto_front": [{"arch": TRAIN_ARCH}]}).encode(),
    "unfinished_run/config.yaml": b"{}\n",
}

Case = tuple[str, Callable[[Path, Path], list[str]], str]


def _run_like(command: str) -> list[Case]:
    """Config, --set, space-file and --out errors, the same for run, search and schedule --once."""
    def args(*extra: str) -> Callable[[Path, Path], list[str]]:
        def build(inputs: Path, data: Path) -> list[str]:
            tail = ["--once"] if command == "schedule" else []
            formatted = [e.format(inputs=inputs) for e in extra]
            return [command, "--out", str(inputs.parent / "out"), "--set", f"data.path={data}", *formatted, *tail]
        return build

    return [
        (f"{command}: broken config YAML", args("--config", "{inputs}/broken.yaml"), "is not valid YAML"),
        (f"{command}: config not a mapping", args("--config", "{inputs}/list.yaml"), "must hold a mapping"),
        (f"{command}: binary config", args("--config", "{inputs}/binary.yaml"), "binary.yaml cannot be read"),
        (f"{command}: unknown section", args("--config", "{inputs}/typo.yaml"), "serch: unknown field"),
        (f"{command}: missing config", args("--config", "{inputs}/nope.yaml"), "nope.yaml does not exist"),
        (f"{command}: --set YAML error", args("--set", "search.epochs=[1"), "--set search.epochs=[1"),
        (f"{command}: --set without =", args("--set", "search.epochs"), "must look like section.field=value"),
        (f"{command}: infinite target", args("--set", "budget.target=.inf"),
         "budget.target: Input should be a finite number"),
        (f"{command}: reinforce with relaxed sampling",
         args("--set", "search.arch_gradient=reinforce", "--set", "search.sampling=relaxed"),
         "search: arch_gradient='reinforce' scores sampled paths and needs sampling='single_path'"),
        (f"{command}: unknown derivation proxy", args("--set", "search.derive_proxy=fewshot"),
         "search.derive_proxy: Input should be 'inherited', 'few_shot' or 'scratch' (got 'fewshot')"),
        (f"{command}: fbnet loss under a sub-microsecond target",
         args("--set", "budget.metric=latency", "--set", "budget.target=0.0005", "--set", "search.cost_loss=fbnet"),
         "budget.target / search.cost_loss: target=0.0005 is too small for the fbnet loss"),
        (f"{command}: population over the vocabulary", args("--set", "evolution.population_per_layer=121"),
         "evolution.population_per_layer: Input should be less than or equal to 120"),
        (f"{command}: missing space file", args("--set", "space.file={inputs}/nope.yaml"),
         "space.file"),
        (f"{command}: broken space YAML", args("--set", "space.file={inputs}/space_broken.yaml"),
         "space_broken.yaml is not valid YAML"),
        (f"{command}: broken space JSON", args("--set", "space.file={inputs}/space_broken.json"),
         "space_broken.json is not valid JSON"),
        (f"{command}: space widths [a, b]", args("--set", "space.file={inputs}/space_widths.json"),
         "widths=['a', 'b'] must be integers"),
        (f"{command}: space stages: 5", args("--set", "space.file={inputs}/space_stages5.json"),
         "stages=5 must be a list"),
        (f"{command}: space stages: [x]", args("--set", "space.file={inputs}/space_stages_x.json"),
         "stage 0 is 'x'"),
    ]


def _train_cases() -> list[Case]:
    """``train ARCH`` and ``export CHECKPOINT``: the source, the config and the data are checked first."""
    def train(source: str, *extra: str) -> Callable[[Path, Path], list[str]]:
        return lambda i, d: ["train", source.format(inputs=i), "--out", str(i.parent / "out"),
                             "--set", f"data.path={d}", *(e.format(inputs=i) for e in extra)]

    def export(name: str, *extra: str) -> Callable[[Path, Path], list[str]]:
        return lambda i, d: ["export", str(i / name), "--out", str(i.parent / "out"), "--set", f"data.path={d}",
                             *extra]

    return [
        ("train: neither file, string nor RUN:N", train("mobilenet"), "is neither an arch file, an arch string"),
        ("train: RUN:N with a bad N", train("{inputs}/front_run:first"), "N in PATH:N must be a whole number"),
        ("train: RUN:N of nothing", train("{inputs}/nope:0"), "is neither an arch file nor a run directory"),
        ("train: RUN:N past the front", train("{inputs}/front_run:3"), "has 1 point(s), numbered from 0; got 3"),
        ("train: RUN:N of an unfinished run", train("{inputs}/unfinished_run:0"), "has no summary.json yet"),
        ("train: file with many models", train(PAPER_MODELS), "pick one with"),
        ("train: FILE:N past its models", train(PAPER_MODELS + ":999"), "N must be below"),
        ("train: classes differ from the data", train(PAPER_MODELS + ":0"), "classes but the data set"),
        ("train: channels differ from the data", train(TRAIN_ARCH.replace("1x12", "3x12")),
         "takes 3 input channels but the data set"),
        ("train: broken arch string", train(TRAIN_ARCH.replace("ds_k3", "ds_k4")), "ds_k4"),
        ("train: bad --set", train(TRAIN_ARCH, "--set", "retrain.epochs=0"), "retrain.epochs"),
        ("train: empty lr range", train(TRAIN_ARCH, "--no-tune", "--set", "retrain.lr_range=[0, 0.1]"),
         "low end must be > 0"),
        ("train: no ONNX to register", train(TRAIN_ARCH, "--set", "export.formats=[torchscript]"),
         "train registers the ONNX file"),
        ("train: --out is a file", lambda i, d: ["train", TRAIN_ARCH, "--out", str(i / "a_file"),
                                                 "--set", f"data.path={d}"], "a_file is a file, not a directory"),
        ("export: missing checkpoint", export("nope.pt"), "nope.pt does not exist"),
        ("export: not a torch file", export("a_file"), "a_file cannot be read as weights"),
        ("export: pickled objects", export("pickled.pt"), "pickled.pt cannot be read as weights"),
        ("export: a list", export("list.pt"), "holds a list that is not a state dict"),
        ("export: no recorded arch", export("no_arch.pt"), "does not record its architecture"),
        ("export: weights of another arch", export("no_arch.pt", "--arch", TRAIN_ARCH),
         "does not hold weights of"),
    ]


CASES: list[Case] = [
    *_run_like("run"), *_run_like("search"), *_run_like("schedule"),
    ("run: reference outside the space",
     lambda i, d: ["run", "--out", str(i.parent / "out"), "--set", f"data.path={d}",
                   "--set", f"space.file={i}/space_tiny.json", "--set", f"space.reference={MISMATCHED_REFERENCE}"],
     "space.reference does not fit the search space: the reference has 1 stages, the space 2"),
    ("run: --out is a file", lambda i, d: ["run", "--out", str(i / "a_file"), "--set", f"data.path={d}"],
     "a_file is a file, not a directory"),
    ("search: --out is a file", lambda i, d: ["search", "--out", str(i / "a_file"), "--set", f"data.path={d}"],
     "a_file is a file, not a directory"),
    ("status: not a run directory", lambda i, d: ["status", str(i)], "is not a run directory"),
    ("resume: not a run directory", lambda i, d: ["resume", str(i)], "is not a run directory"),
    ("resume: missing directory", lambda i, d: ["resume", str(i / "nope")], "is not a run directory"),
    ("cost: models 5", lambda i, d: ["cost", str(i / "models5.json")], "models=5 must be a list"),
    ("cost: models [5]", lambda i, d: ["cost", str(i / "models_list5.json")], "a model entry is a mapping"),
    ("cost: stem 5", lambda i, d: ["cost", str(i / "stem5.json")], "stem=5 must be a mapping"),
    ("cost: binary file", lambda i, d: ["cost", str(i / "arch.bin")], "is not a text file"),
    ("cost: huge file", lambda i, d: ["cost", str(i / "huge.txt")], "an architecture file is at most"),
    ("cost: absurd repeat", lambda i, d: ["cost", "input=1x8 stem= stages=ir_r1000000_k3_e3_c8 head= classes=2"],
     "must be at least 1 and at most 100"),
    ("cost: empty middle stage", lambda i, d: ["cost", "input=1x8 stem= stages=ds_k3_c8||ds_k3_c8 head= classes=2"],
     "stage 1 of stages= is empty"),
    ("cost: huge garbage string", lambda i, d: ["cost", "stages=ds_k3_c8 " + "y" * 3_000_000],
     "bad section 'yyyy"),
    ("data info: missing file", lambda i, d: ["data", "info", str(i / "nope.parquet")], "does not exist"),
    ("data info: not Parquet", lambda i, d: ["data", "info", str(i / "not_parquet.parquet")], "not_parquet.parquet"),
    *_train_cases(),
    ("promote: store that does not exist",
     lambda i, d: ["promote", "--tracking-uri", f"sqlite:///{i}/new/x.db", "--model", "m", "--version", "1"],
     "no MLflow store at"),
    ("predict: store that does not exist",
     lambda i, d: ["predict", "--tracking-uri", f"sqlite:///{i}/new/x.db", "--model", "m", str(i / "a_file")],
     "no MLflow store at"),
]


def _tree(root: Path, times: bool = True) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns if times else 0)
            for p in root.rglob("*")}


def _assert_refused(argv: list[str], expected: str, root: Path, capsys: pytest.CaptureFixture[str],
                    times: bool = True) -> None:
    before, ray_before = _tree(root, times), ray.is_initialized()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[:2000]
    assert expected in lines[0] and "Traceback" not in err and "\x1b[" not in err
    assert len(lines[0]) < 1000
    assert _tree(root, times) == before, "an input error wrote files"
    assert ray.is_initialized() == ray_before, "an input error started Ray"


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name, content in INPUT_FILES.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


@pytest.mark.parametrize("name, argv, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line(name: str, argv: Callable[[Path, Path], list[str]], expected: str,
                                          inputs: Path, tiny_dataset: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _assert_refused(argv(inputs, tiny_dataset), expected, inputs.parent, capsys)


RUN_FILES: list[tuple[str, bytes, str]] = [
    ("status.json", b"{not json", "status.json cannot be read"),
    ("status.json", b"[1, 2]", "status.json holds a list"),
    ("evolution.json", b"", "evolution.json cannot be read"),
    ("evolution.json", b'{"history": 5}', "no valid generation history"),
    ("config.yaml", b"out_dir: [1", "config.yaml is not valid YAML"),
    ("config.yaml", b"\xff\xfe\x00", "config.yaml cannot be read"),
    ("config.yaml", b"search: {epochs: zero}", "search.epochs"),
    ("summary.json", b"{}", "summary.json lacks valid best"),
    ("run.json", b"[]", "run.json holds a list"),
]


@pytest.mark.parametrize("command", ["status", "resume"])
@pytest.mark.parametrize("name, content, expected", RUN_FILES, ids=[f"{n}:{c[:12]!r}" for n, c, _ in RUN_FILES])
def test_a_broken_run_directory_is_refused_in_one_line(command: str, name: str, content: bytes, expected: str,
                                                       tmp_path: Path, tiny_dataset: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    finished_run(run, tiny_dataset, tracked=False)
    (run / name).write_bytes(content)
    if command == "status" and name in ("summary.json", "run.json"):
        pytest.skip("status reads neither file")
    _assert_refused([command, str(run)], expected, tmp_path, capsys)


def test_a_checkpoint_of_another_type_is_refused_in_one_line(tmp_path: Path, tiny_dataset: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from tests.spaces.tiny_space import tiny_space

    space = tmp_path / "space.yaml"
    tiny_space().save(space)
    (tmp_path / "out" / "search").mkdir(parents=True)
    torch.save([1, 2, 3], tmp_path / "out" / "search" / "checkpoint.pt")
    (tmp_path / "out" / "search" / "space.yaml").write_text(space.read_text())
    argv = ["search", "--space", str(space), "--out", str(tmp_path / "out"), "--set", f"data.path={tiny_dataset}"]
    # the search directory is in use (its space.yaml is rewritten as it was): only nothing new may appear
    _assert_refused(argv, "holds a list, not a search checkpoint; delete it", tmp_path, capsys, times=False)
