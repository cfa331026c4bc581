"""The model registry on a real MLflow SQLite store: registration, loading, the promotion rule, predict.

One ONNX export (legacy exporter, opset 17: ~1 s instead of ~10 s for dynamo)
is registered as four versions that differ only in their recorded metrics,
which is all the promotion rule reads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image

from deploy.cli import register as register_deploy_commands
from deploy.export import DeployableModel, export_model
from deploy.predict import predict_images
from deploy.registry import (
    CANDIDATE,
    CHAMPION,
    LOCK_SUFFIX,
    PromotionDecision,
    RegisteredVersion,
    RegistryError,
    apply_decision,
    load_registered,
    logged_decision,
    parse_model_uri,
    promote_if_better,
    register_model,
    version_of_run,
)
from deploy.registry import test_split_id as split_id  # a test_* name would be collected by pytest
from pipeline.config import Config, MlflowConfig
from pipeline.data import load_dataset, read_info, write_dataset
from spaces.arch import Arch
from spaces.cost import arch_cost
from spaces.modules import ChildNet
from spaces.onnx_session import load_onnx_session

NAME = "tiny"
ARCH = Arch.parse("input=1x12 stem=cn_k3_c8_relu6 stages=ds_k3_c8_relu6 head= classes=4")
BUDGET = {"budget_metric": "madds", "budget_target": float(arch_cost(ARCH).madds), "budget_slack": 1.0}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> dict[str, Path]:
    images, _ = load_dataset(tiny_dataset).split("test", normalize=False)
    model = DeployableModel.for_dataset(ChildNet(ARCH), ARCH, read_info(tiny_dataset))
    out = tmp_path_factory.mktemp("export")
    report = export_model(model, out, opset=17, test_batch=images[:8])
    (out / "export.json").write_text(json.dumps(report.to_dict()))
    return {"onnx": report.paths["onnx"], "torchscript": report.paths["torchscript"], "report": out / "export.json"}


@pytest.fixture(scope="module")
def other_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8x8 images with other test labels: another test split, and the wrong shape for the model."""
    rng = np.random.default_rng(1)
    out = tmp_path_factory.mktemp("other") / "other.parquet"
    write_dataset(out, rng.integers(0, 255, (20, 8, 8, 1), dtype=np.uint8), rng.integers(0, 4, 20),
                  np.array(["train"] * 10 + ["test"] * 10), ["a", "b", "c", "d"], source="random")
    return out


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, exported: dict[str, Path], tiny_dataset: Path,
             other_dataset: Path) -> tuple[str, list[RegisteredVersion]]:
    """Versions 1-4: accuracy 0.5, 0.6, 0.6 (a tie), 0.9 on another test split."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    example = load_dataset(tiny_dataset).split("test", normalize=False)[0][:2].numpy()
    split, other_split = split_id(tiny_dataset), split_id(other_dataset)
    versions = []
    for accuracy, test_split in ((0.5, split), (0.6, split), (0.6, split), (0.9, other_split)):
        versions.append(register_model(
            uri, NAME, exported["onnx"], arch=ARCH, classes=["a", "b", "c", "d"],
            metrics={"test_accuracy": accuracy, "latency_ms": 0.2}, input_example=example, test_split=test_split,
            extra_artifacts=[exported["torchscript"], exported["report"]], tags={"source": "test"}))
    return uri, versions


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="autospace")
    commands = parser.add_subparsers(dest="command", required=True)
    register_deploy_commands(commands)
    args = parser.parse_args(argv)
    return args.func(args)


def _run_dir(tmp_path: Path, uri: str) -> Path:
    """A run directory whose config points at the test store and model name."""
    tmp_path.mkdir(exist_ok=True)
    config = Config(out_dir=tmp_path, mlflow=MlflowConfig(tracking_uri=uri, registered_model=NAME))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return tmp_path


# ---- registration and loading ---------------------------------------------------------------
def test_register_logs_tags_metrics_and_candidate_alias(registry: tuple[str, list[RegisteredVersion]]) -> None:
    uri, versions = registry
    client = MlflowClient(uri)
    assert [v.version for v in versions] == ["1", "2", "3", "4"]
    assert str(client.get_model_version_by_alias(NAME, CANDIDATE).version) == "4"
    tags = client.get_model_version(NAME, "2").tags
    cost = arch_cost(ARCH)
    assert tags["arch"] == ARCH.encode()
    assert (tags["madds"], tags["params"]) == (str(cost.madds), str(cost.params))
    assert float(tags["test_accuracy"]) == 0.6 and tags["input_shape"] == "[1, 12, 12]"
    assert tags["source"] == "test" and tags["test_split"].startswith("test-80-")
    run = client.get_run(versions[1].run_id)
    assert run.data.metrics["test_accuracy"] == 0.6 and run.info.status == "FINISHED"


def test_load_by_alias_predicts_like_the_onnx_file(registry: tuple[str, list[RegisteredVersion]],
                                                   exported: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    uri, _ = registry
    session, metadata = load_registered(uri, f"models:/{NAME}@{CANDIDATE}")
    assert metadata["version"] == "4" and metadata["classes"] == ["a", "b", "c", "d"]
    assert metadata["input_shape"] == [1, 12, 12] and CANDIDATE in metadata["aliases"]
    batch = np.random.default_rng(0).random((5, 1, 12, 12), dtype=np.float32)
    direct = load_onnx_session(exported["onnx"]).run(None, {"images": batch})[0]
    np.testing.assert_array_equal(session.run(None, {"images": batch})[0], direct)

    extra = mlflow.artifacts.download_artifacts(artifact_uri=f"{metadata['artifact_uri']}/extra", tracking_uri=uri)
    assert sorted(p.name for p in Path(extra).iterdir()) == ["export.json", "model.ts"]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # MLflow's own loader resolves models:/ through the global URI
    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}@{CANDIDATE}")
    np.testing.assert_allclose(pyfunc.predict(batch)["logits"], direct, rtol=0, atol=0)


def test_registry_errors_say_what_is_missing(registry: tuple[str, list[RegisteredVersion]],
                                            exported: dict[str, Path]) -> None:
    uri, _ = registry
    with pytest.raises(RegistryError, match="no registered model named 'nope'"):
        load_registered(uri, "models:/nope@champion")
    with pytest.raises(RegistryError, match="no version of tiny has alias staging"):
        load_registered(uri, f"models:/{NAME}@staging")
    with pytest.raises(RegistryError, match="tiny has no version 9"):
        load_registered(uri, f"models:/{NAME}/9")
    with pytest.raises(RegistryError, match="outputs 4 logits but 3 classes"):
        register_model(uri, NAME, exported["onnx"], arch=ARCH, classes=["a", "b", "c"], metrics={},
                       input_example=np.zeros((1, 1, 12, 12), np.float32), test_split="x")
    assert parse_model_uri("tiny") == ("tiny", CHAMPION, None)
    assert parse_model_uri("models:/tiny/3") == ("tiny", None, "3")


def test_split_id_is_stable_and_tells_splits_apart(tiny_dataset: Path, other_dataset: Path) -> None:
    assert split_id(tiny_dataset) == split_id(tiny_dataset)
    assert split_id(tiny_dataset) != split_id(other_dataset)


# ---- the promotion rule -----------------------------------------------------------------------
def test_promotion_rule(registry: tuple[str, list[RegisteredVersion]], tmp_path: Path) -> None:
    uri, _ = registry
    client = MlflowClient(uri)
    log = tmp_path / "promotions.jsonl"
    with pytest.raises(RegistryError, match="no version of tiny has alias champion; promote one with `autospace promote"):
        load_registered(uri, NAME)

    first = promote_if_better(uri, NAME, 1, **BUDGET, log_path=log)
    assert first.decision == "promoted" and "no champion yet" in first.reasons[1]

    over = promote_if_better(uri, NAME, 2, **{**BUDGET, "budget_target": 1000.0}, log_path=log)
    assert over.decision == "kept" and over.reasons[0].startswith("madds 29984 over the budget 1000")

    small_gain = promote_if_better(uri, NAME, 2, **BUDGET, min_gain=0.2)
    assert small_gain.decision == "kept" and "does not beat champion v1" in small_gain.reasons[1]

    better = promote_if_better(uri, NAME, 2, **BUDGET, min_gain=0.1, log_path=log)  # 0.6 - 0.5 is 0.0999...
    assert better.decision == "promoted" and (better.accuracy, better.champion_accuracy) == (0.6, 0.5)
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == "2"

    latency = promote_if_better(uri, NAME, 3, budget_metric="latency", budget_target=0.1)
    assert latency.decision == "kept" and latency.reasons[0].startswith("latency 0.2 over the budget 0.1")
    tie = promote_if_better(uri, NAME, 3, **BUDGET)
    worse = promote_if_better(uri, NAME, 1, **BUDGET)
    assert (tie.decision, worse.decision) == ("kept", "kept") and "gain +0.0000" in tie.reasons[1]

    other_split = promote_if_better(uri, NAME, 4, **BUDGET, log_path=log)
    assert other_split.decision == "kept" and "test split differs" in other_split.reasons[1]
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == "2"

    tags = client.get_model_version(NAME, "4").tags
    assert tags["promotion_decision"] == "kept" and "test split differs" in tags["promotion_reason"]
    assert client.get_model_version(NAME, "2").tags["promotion_decision"] == "promoted"
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [d["decision"] for d in logged] == ["promoted", "kept", "promoted", "kept"]
    assert logged[2]["champion_version"] == "1" and logged[2]["budget_limit"] == BUDGET["budget_target"]


def test_a_logged_decision_is_finished_not_taken_again(exported: dict[str, Path], tiny_dataset: Path,
                                                        tmp_path: Path) -> None:
    """What the deploy stage relies on after a kill: a run's version is found, a logged decision re-applied."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    example = load_dataset(tiny_dataset).split("test", normalize=False)[0][:2].numpy()
    version = register_model(uri, NAME, exported["onnx"], arch=ARCH, classes=["a", "b", "c", "d"],
                             metrics={"test_accuracy": 0.5}, input_example=example, test_split="s")
    client = MlflowClient(uri)
    assert str(version_of_run(client, NAME, version.run_id).version) == version.version
    assert version_of_run(client, NAME, "0" * 32) is None

    log = tmp_path / "promotions.jsonl"
    decision = promote_if_better(uri, NAME, version.version, **BUDGET, log_path=log)
    client.delete_registered_model_alias(NAME, CHAMPION)  # killed after logging, before applying
    client.delete_model_version_tag(NAME, version.version, "promotion_decision")
    with log.open("a") as file:
        file.write('{"name": "tiny", "vers')  # a line cut by a kill is skipped
    assert logged_decision(log, NAME, version.version) == decision and decision.decision == "promoted"
    assert logged_decision(log, NAME, "7") is None and logged_decision(tmp_path / "none.jsonl", NAME, "1") is None
    apply_decision(uri, decision)
    apply_decision(uri, decision)  # idempotent
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == version.version
    assert client.get_model_version(NAME, version.version).tags["promotion_decision"] == "promoted"
    assert PromotionDecision.from_dict(json.loads(json.dumps(decision.to_dict()))) == decision


def test_a_lock_released_while_the_store_reports_the_clash_is_taken_not_an_error(
        exported: dict[str, Path], tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race CI met: the store's create, on a name clash, looks the lock up just after its holder released it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    example = load_dataset(tiny_dataset).split("test", normalize=False)[0][:2].numpy()
    register_model(uri, NAME, exported["onnx"], arch=ARCH, classes=["a", "b", "c", "d"],
                   metrics={"test_accuracy": 0.5}, input_example=example, test_split="s")
    client = MlflowClient(uri)
    lock = NAME + LOCK_SUFFIX
    client.create_registered_model(lock)  # another promotion holds the lock
    store = client._get_registry_client().store
    lookup = store.get_registered_model
    releases = []

    def holder_releases_first(name: str):  # the holder finishes between the clash and the store's lookup
        if name == lock and not releases:
            releases.append(name)
            store.delete_registered_model(name)
        return lookup(name)

    monkeypatch.setattr(store, "get_registered_model", holder_releases_first)
    decision = promote_if_better(client, NAME, 1, **BUDGET)
    assert releases == [lock] and decision.decision == "promoted"
    assert [m.name for m in client.search_registered_models(f"name LIKE '{NAME}%'")] == [NAME]  # lock released


def test_promote_cli_force_moves_the_alias(registry: tuple[str, list[RegisteredVersion]], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    uri, _ = registry
    run_dir = _run_dir(tmp_path, uri)
    promote_if_better(uri, NAME, 2, **BUDGET, force=True)  # the state test_promotion_rule ends in
    assert _cli(["promote", "--tracking-uri", uri, "--model", NAME, "--version", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["decision"] == "kept"
    assert _cli(["promote", "--run-dir", str(run_dir), "--version", "4", "--force"]) == 0
    assert capsys.readouterr().out.startswith("tiny v4: forced")
    client = MlflowClient(uri)
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == "4"
    assert client.get_model_version(NAME, "4").tags["promotion_decision"] == "forced"
    (record,) = [json.loads(line) for line in (run_dir / "promotions.jsonl").read_text().splitlines()]
    assert record["decision"] == "forced" and record["reasons"][0].startswith("forced by hand")


# ---- predict ---------------------------------------------------------------------------------
def test_predict_cli_on_png_files_and_a_parquet_split(registry: tuple[str, list[RegisteredVersion]],
                                                      exported: dict[str, Path], tiny_dataset: Path,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri, _ = registry
    images, _ = load_dataset(tiny_dataset).split("test", normalize=False)
    pixels = np.rint(images[:3].numpy() * 255).astype(np.uint8)
    files = []
    for i, image in enumerate(pixels):
        files.append(tmp_path / f"img{i}.png")
        Image.fromarray(image[0], mode="L").save(files[-1])
    rgb = tmp_path / "big.jpg"  # RGB and 24x24: converted to L and resized to 12x12
    Image.fromarray(np.repeat(np.kron(pixels[0, 0], np.ones((2, 2), np.uint8))[..., None], 3, axis=2)).save(rgb)

    logits = load_onnx_session(exported["onnx"]).run(None, {"images": images.numpy()})[0]
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    expected = probabilities.argmax(1)

    model = f"models:/{NAME}@{CANDIDATE}"
    assert _cli(["predict", "--model", model, "--tracking-uri", uri, "--json", *map(str, files), str(rgb)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [p["index"] for p in shown[:3]] == expected[:3].tolist()
    assert [p["class_name"] for p in shown[:3]] == [["a", "b", "c", "d"][k] for k in expected[:3]]
    np.testing.assert_allclose([p["probability"] for p in shown[:3]], probabilities[np.arange(3), expected[:3]],
                               rtol=1e-5)
    assert shown[3]["source"] == str(rgb) and 0 < shown[3]["probability"] <= 1

    run_dir = _run_dir(tmp_path / "run", uri)
    assert _cli(["predict", "--model", model, "--run-dir", str(run_dir), f"{tiny_dataset}:test"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(images) and lines[0].startswith(f"{tiny_dataset}:test[0]\t")
    assert [line.split("\t")[1] for line in lines] == [["a", "b", "c", "d"][k] for k in expected]


def test_predict_rejects_unreadable_images_and_wrong_shapes(registry: tuple[str, list[RegisteredVersion]],
                                                           other_dataset: Path, tmp_path: Path) -> None:
    uri, _ = registry
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(RegistryError, match="cannot read image .*broken.png"):
        predict_images(f"models:/{NAME}@{CANDIDATE}", [broken], uri)
    with pytest.raises(RegistryError, match="holds 1x8x8 images but the model takes 1x12x12"):
        predict_images(f"models:/{NAME}@{CANDIDATE}", [f"{other_dataset}:test"], uri)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` grey pixels and holds one row of them: a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height", [(5000, 5000), (100_000, 100_000)])
def test_predict_refuses_a_decompression_bomb_with_the_limit(registry: tuple[str, list[RegisteredVersion]],
                                                             tmp_path: Path, width: int, height: int,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from deploy.predict import MAX_IMAGE_PIXELS
    from pipeline.cli import main

    uri, _ = registry
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(width, height))
    assert main(["predict", "--model", f"models:/{NAME}@{CANDIDATE}", "--tracking-uri", uri, str(bomb)]) == 2
    err = capsys.readouterr().err
    assert f"declares more than {MAX_IMAGE_PIXELS:,} pixels" in err and "4096x4096" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("command", ["promote", "predict"])
def test_a_store_that_does_not_exist_is_named_not_created(tmp_path: Path, command: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    uri = f"sqlite:///{tmp_path / 'new' / 'x.db'}"
    args = {"promote": ["promote", "--tracking-uri", uri, "--model", NAME, "--version", "1"],
            "predict": ["predict", "--tracking-uri", uri, "--model", NAME, str(tmp_path / "a.png")]}[command]
    assert main(args) == 2
    assert f"error: no MLflow store at {uri}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
