"""The MLflow model registry side of deployment: register exported ONNX models, promote champions.

What gets logged (:func:`register_model`). The ONNX file becomes an MLflow
``LoggedModel`` (ONNX + pyfunc flavours, signature inferred from the input
example and the model's own output on it, explicit ``pip_requirements`` so no
requirement inference runs) whose folder also holds ``autospace.json`` (arch,
classes, native input shape, metrics, test split) and ``extra/`` (the
TorchScript file, the export report). It is registered as a new version of
``name``, which gets the alias ``candidate`` and the version tags ``arch``,
``madds``, ``params``, every metric (``test_accuracy``, ``latency_ms``, ...),
``test_split`` and ``input_shape``; the metrics also go on the run.

Why not ``mlflow.onnx.log_model``. In MLflow 3.17 it resolves the tracking URI
and the experiment from global state: with only a client at hand it put the
model into experiment ``0`` under ``./mlruns`` of the working directory, and the
SQLite registry store resolves ``models:/<model_id>`` sources through the global
URI too. So the model is written with ``mlflow.onnx.save_model`` and uploaded
with an explicit client (``create_logged_model`` / ``log_model_artifacts``), and
the version's source is the logged model's artifact location. That is also
~0.5 s instead of ~3 s (no serving-input validation round trip).

The promotion rule (:func:`promote_if_better`). The alias ``champion`` moves to
version V only when both hold:

1. **Budget.** V's cost on the budget metric (tag ``madds``, ``params`` or
   ``latency_ms``) is at most ``budget_target * budget_slack``.
2. **Better on the same test split.** There is no champion yet; or the
   champion's ``test_split`` tag equals V's (accuracies on different test sets
   are not comparable, so the champion is kept and the reason says so) and
   ``gain = acc(V) - acc(champion)`` satisfies ``gain > 0 and gain >= min_gain``:
   a tie never replaces the champion, whatever ``min_gain`` is.

A forced promotion moves the alias regardless and records what the rule said.
Every decision is returned, written to V's tags ``promotion_decision``
(``promoted``/``kept``/``forced``) and ``promotion_reason``, and appended to a
JSON Lines log when one is given.

Concurrent promotions. Reading the champion, deciding and moving the alias is a
read-modify-write, and MLflow has no compare-and-set for aliases: two runs
promoting into one registered model at once (two deploy stages on a shared
server) both read "no champion", both logged ``promoted``, and the alias ended on
whichever wrote last, possibly the worse one. So a promotion holds a lock for the
whole decision: the registered model ``<name>.promotion-lock``, which the store
creates for one caller only (names are unique), deleted when the decision is
logged. A lock older than :data:`STALE_LOCK_SECONDS` is from a promoter that died
holding it and is removed (two promoters that find the same stale lock may then
both go ahead: only after such a crash); one younger that does not go away within
``lock_timeout`` is an error naming it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow.artifacts
import mlflow.onnx
import numpy as np
import onnx
import onnxruntime as ort
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model, infer_signature

from deploy.errors import RegistryError
from pipeline.tracking import KIND, KIND_TAG
from spaces.onnx_session import load_onnx_session
from spaces.arch import Arch
from spaces.budget import COST_TAGS
from spaces.cost import arch_cost

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "COST_TAGS",
    "PromotionDecision",
    "RegisteredVersion",
    "RegistryError",
    "apply_decision",
    "existing_store",
    "experiment_id",
    "load_registered",
    "logged_decision",
    "parse_model_uri",
    "promote_if_better",
    "register_model",
    "resolve_version",
    "test_split_id",
    "version_of_run",
]

CANDIDATE = "candidate"
CHAMPION = "champion"
METADATA_FILE = "autospace.json"
METADATA_FORMAT = "autospace-registered-model/1"
PIP_REQUIREMENTS = ["onnxruntime", "numpy"]
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # a missing alias is the latter
_GAIN_TOLERANCE = 1e-9  # accuracies are ratios of counts; keep 0.85 - 0.84 >= 0.01 true
LOCK_SUFFIX = ".promotion-lock"
STALE_LOCK_SECONDS = 600.0  # a decision takes about a second; a lock this old lost its promoter


# ---- clients and versions --------------------------------------------------------------------
def _client(client_or_uri: MlflowClient | str) -> MlflowClient:
    return client_or_uri if isinstance(client_or_uri, MlflowClient) else MlflowClient(client_or_uri)


def existing_store(uri: str) -> str:
    """``uri`` when it names a store that exists: for a local one MLflow would silently create an empty
    store (and its folders) instead, and then report the model as missing."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    elif parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme else uri)
    else:
        return uri
    if path is None or not path.exists():
        raise RegistryError(f"no MLflow store at {uri}; check --tracking-uri (or the run directory's mlflow.db)")
    return uri


def _artifact_location(tracking_uri: str) -> str | None:
    """Next to a SQLite store, like :class:`pipeline.tracking.Tracker`; a server decides for itself."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return None


def parse_model_uri(model: str, alias: str | None = None) -> tuple[str, str | None, str | None]:
    """``models:/NAME@alias``, ``models:/NAME/3`` or a bare NAME (with ``alias``, default champion).

    Returns (name, alias, version); exactly one of alias and version is set.
    """
    if not model.startswith("models:/"):
        return model, alias or CHAMPION, None
    rest = model.removeprefix("models:/")
    if "@" in rest:
        name, _, found = rest.partition("@")
        return name, found, None
    name, sep, version = rest.rpartition("/")
    if not sep or not name or not version.isdigit():
        raise RegistryError(f"{model!r} is not a registry URI; use models:/NAME@ALIAS or models:/NAME/VERSION")
    return name, None, version


def resolve_version(client: MlflowClient, name: str, *, alias: str | None = None,
                    version: str | int | None = None) -> ModelVersion:
    """The version behind an alias or number, with an error that says what to do when there is none."""
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise RegistryError(f"no registered model named {name!r} in {client.tracking_uri}") from None
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:
            raise
        if alias is None:
            raise RegistryError(f"{name} has no version {version}") from None
        hint = (f"promote one with `autospace promote --run-dir DIR --version N` (or --tracking-uri URI "
                f"--model {name})" if alias == CHAMPION else "set it with MlflowClient.set_registered_model_alias")
        raise RegistryError(f"no version of {name} has alias {alias}; {hint}") from None


def _alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:
            raise
        return None


# ---- registration ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RegisteredVersion:
    """What :func:`register_model` created: the version, its run and logged model."""

    name: str
    version: str
    run_id: str
    model_id: str
    source: str
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "uri": self.uri}


def _tag_value(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def register_model(
    client_or_uri: MlflowClient | str,
    name: str,
    onnx_path: Path,
    *,
    arch: Arch,
    classes: Sequence[str],
    metrics: Mapping[str, float],
    input_example: np.ndarray,
    test_split: str,
    extra_artifacts: Sequence[Path] = (),
    run_id: str | None = None,
    experiment: str = "autospace",
    tags: Mapping[str, Any] | None = None,
) -> RegisteredVersion:
    """Log ``onnx_path`` as a new version of ``name`` and give it the alias ``candidate``.

    ``input_example`` is a float32 N x C x H x W batch at the data set's native size
    (what the deployed model takes); its shape is stored as the version's
    ``input_shape``. ``madds`` and ``params`` default to ``arch_cost(arch)``.
    ``test_split`` is :func:`test_split_id` of the data the test accuracy was
    measured on. Without ``run_id`` a run named ``register-<name>`` is created in
    ``experiment``.
    """
    client = _client(client_or_uri)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise RegistryError(f"ONNX file {onnx_path} does not exist")
    example = np.asarray(input_example, dtype=np.float32)
    if example.ndim != 4:
        raise RegistryError(f"input_example must be N x C x H x W, got shape {example.shape}")
    session = load_onnx_session(onnx_path)
    try:
        output = session.run(None, {session.get_inputs()[0].name: example})[0]
    except Exception as exc:  # onnxruntime raises its own untyped errors on shape mismatch
        raise RegistryError(f"{onnx_path} does not accept input_example of shape {example.shape}: {exc}") from exc
    if output.shape[-1] != len(classes):
        raise RegistryError(f"{onnx_path} outputs {output.shape[-1]} logits but {len(classes)} classes were given")
    names = [Path(path).name for path in extra_artifacts]
    if len(set(names)) != len(names):
        raise RegistryError(f"extra_artifacts {names} repeat a file name; they all go into one folder")

    values = {**arch_cost(arch).to_dict(), **metrics}
    version_tags = {
        "arch": arch.encode(),
        **{key: _tag_value(value) for key, value in values.items()},
        "test_split": test_split,
        "input_shape": json.dumps(list(example.shape[1:])),
        "num_classes": str(len(classes)),
        **{key: str(value) for key, value in (tags or {}).items()},
    }
    metadata = {
        "format": METADATA_FORMAT,
        "name": name,
        "arch": arch.encode(),
        "classes": list(classes),
        "input_shape": list(example.shape[1:]),
        "input_name": session.get_inputs()[0].name,
        "output_name": session.get_outputs()[0].name,
        "metrics": {key: float(value) for key, value in values.items()},
        "test_split": test_split,
    }

    if run_id is None:
        exp_id = experiment_id(client, experiment)
        run_id = client.create_run(exp_id, tags={"mlflow.runName": f"register-{name}",
                                                 "autospace.kind": "register"}).info.run_id
        own_run = True
    else:
        exp_id = client.get_run(run_id).info.experiment_id
        own_run = False

    logged = client.create_logged_model(exp_id, name=name, source_run_id=run_id,
                                        tags={"autospace.arch": arch.encode()})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = Path(tmp) / "model"
            mlflow.onnx.save_model(
                onnx.load(str(onnx_path)), str(model_dir),
                mlflow_model=Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                                   run_id=run_id, model_id=logged.model_id),
                signature=infer_signature(example, output), input_example=example,
                pip_requirements=PIP_REQUIREMENTS, save_as_external_data=False)
            (model_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
            if extra_artifacts:
                (model_dir / "extra").mkdir()
                for path in extra_artifacts:
                    shutil.copyfile(path, model_dir / "extra" / Path(path).name)
            client.log_model_artifacts(logged.model_id, str(model_dir))
    except BaseException:
        # A half-written model must not look usable; the registry has no version of it yet.
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        if own_run:
            client.set_terminated(run_id, "FAILED")
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    client.log_batch(run_id, metrics=[Metric(key, float(value), 0, 0) for key, value in values.items()])
    if own_run:
        client.set_terminated(run_id, "FINISHED")

    try:
        client.create_registered_model(name, description="AutoSpace models (ONNX); alias champion is deployed")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, source=logged.artifact_location, run_id=run_id,
                                          model_id=logged.model_id, tags=version_tags)
    client.set_registered_model_alias(name, CANDIDATE, version.version)
    return RegisteredVersion(name=name, version=str(version.version), run_id=run_id, model_id=logged.model_id,
                             source=logged.artifact_location, tags=version_tags)


def version_of_run(client_or_uri: MlflowClient | str, name: str, run_id: str) -> ModelVersion | None:
    """The version of ``name`` that ``run_id`` registered (the newest, if several), or None.

    A deploy step killed after registering finds its version this way instead of
    registering a second one.
    """
    versions = _client(client_or_uri).search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return max(versions, key=lambda v: int(v.version), default=None)


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created (artifacts beside a SQLite store, opening on its runs) if new."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=_artifact_location(client.tracking_uri),
                                    tags={KIND_TAG: KIND})


def test_split_id(data_path: Path) -> str:
    """A stable id of a data file's test split: ``test-<count>-<sha256 of pixels and labels>``.

    Two test accuracies are comparable only when this id is equal; it changes
    when any test image or label changes, and not when the file is merely
    re-written or moved.
    """
    from pipeline.data import load_dataset

    images, labels = load_dataset(Path(data_path)).split("test", normalize=False)
    pixels = np.rint(images.numpy() * 255).astype(np.uint8)
    digest = hashlib.sha256(b"autospace-test-split/1")
    digest.update(json.dumps(list(pixels.shape)).encode())
    digest.update(pixels.tobytes())
    digest.update(labels.numpy().astype("<i8").tobytes())
    return f"test-{len(labels)}-{digest.hexdigest()[:16]}"


# ---- loading ---------------------------------------------------------------------------------
def load_registered(client_or_uri: MlflowClient | str, model: str,
                    alias: str | None = None) -> tuple[ort.InferenceSession, dict[str, Any]]:
    """The onnxruntime session of a registered version and its metadata.

    ``model`` is ``models:/NAME@alias``, ``models:/NAME/VERSION``, or NAME with
    ``alias`` (default ``champion``). Only ``model.onnx`` and ``autospace.json``
    are downloaded; ``metadata["artifact_uri"]`` leads to the rest (``extra/``).
    """
    client = _client(client_or_uri)
    name, alias, number = parse_model_uri(model, alias)
    version = resolve_version(client, name, alias=alias, version=number)
    location = client.get_model_version_download_uri(name, version.version)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            onnx_file = mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/model.onnx", dst_path=tmp,
                                                            tracking_uri=client.tracking_uri)
            meta_file = mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/{METADATA_FILE}",
                                                            dst_path=tmp, tracking_uri=client.tracking_uri)
        except (MlflowException, OSError) as exc:
            raise RegistryError(f"{name} version {version.version} at {location} lacks model.onnx or "
                                f"{METADATA_FILE}; was it registered by autospace? ({exc})") from exc
        session = load_onnx_session(onnx_file)
        stored = json.loads(Path(meta_file).read_text())
    metadata = {**stored, "name": name, "version": str(version.version), "aliases": list(version.aliases),
                "run_id": version.run_id, "artifact_uri": location, "tags": dict(version.tags)}
    return session, metadata


# ---- promotion -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of the promotion rule for one version, with the numbers it was based on."""

    name: str
    version: str
    decision: str  # promoted | kept | forced
    reasons: tuple[str, ...]
    metric: str
    accuracy: float
    champion_version: str | None
    champion_accuracy: float | None
    budget_metric: str
    cost: float | None
    budget_limit: float
    time: str

    @property
    def promoted(self) -> bool:
        return self.decision != "kept"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": list(self.reasons), "promoted": self.promoted}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromotionDecision:
        """The decision :meth:`to_dict` wrote (a ``promotions.jsonl`` line)."""
        return cls(**{**{k: v for k, v in data.items() if k != "promoted"}, "reasons": tuple(data["reasons"])})

    def __str__(self) -> str:
        if self.champion_version is None:
            champion = "no champion"
        elif self.champion_accuracy is None:
            champion = f"champion v{self.champion_version}"
        else:
            champion = f"champion v{self.champion_version} {self.metric}={self.champion_accuracy:.4f}"
        return (f"{self.name} v{self.version}: {self.decision} ({self.metric}={self.accuracy:.4f}, {champion}): "
                + "; ".join(self.reasons))


def _float_tag(version: ModelVersion, key: str) -> float | None:
    value = version.tags.get(key)
    return None if value is None else float(value)


def _budget_check(version: ModelVersion, budget_metric: str, limit: float,
                  target: float, slack: float) -> tuple[bool, float | None, str]:
    tag = COST_TAGS.get(budget_metric, budget_metric if budget_metric in COST_TAGS.values() else None)
    if tag is None:
        raise RegistryError(f"budget metric {budget_metric!r} is not one of {', '.join(COST_TAGS)}")
    cost = _float_tag(version, tag)
    if cost is None:
        return False, None, f"version {version.version} has no {tag} tag, so its {budget_metric} budget is unknown"
    within = cost <= limit
    relation = "within" if within else "over"
    return within, cost, (f"{budget_metric} {cost:g} {relation} the budget {limit:g} "
                          f"(target {target:g} x slack {slack:g})")


def _compare(version: ModelVersion, champion: ModelVersion | None, metric: str, accuracy: float,
             min_gain: float) -> tuple[bool, float | None, str]:
    if champion is None:
        return True, None, "no champion yet"
    champion_accuracy = _float_tag(champion, metric)
    if str(champion.version) == str(version.version):
        return False, champion_accuracy, f"version {version.version} already is the champion"
    mine, theirs = version.tags.get("test_split"), champion.tags.get("test_split")
    if champion_accuracy is None or theirs is None:
        return False, champion_accuracy, (f"champion v{champion.version} lacks the {metric} or test_split tag, "
                                          "so it cannot be compared; promote with --force")
    if mine != theirs:
        return False, champion_accuracy, (f"test split differs: champion v{champion.version} was tested on {theirs}, "
                                          f"v{version.version} on {mine}; the accuracies are not comparable, "
                                          "so the champion stays (re-evaluate both on one split, or --force)")
    gain = accuracy - champion_accuracy
    better = gain > 0 and gain >= min_gain - _GAIN_TOLERANCE
    verdict = "beats" if better else "does not beat"
    return better, champion_accuracy, (f"{metric} {accuracy:.4f} {verdict} champion v{champion.version} "
                                       f"{champion_accuracy:.4f} (gain {gain:+.4f}; needs > 0 and >= {min_gain:g})")


def promote_if_better(
    client_or_uri: MlflowClient | str,
    name: str,
    version: str | int,
    *,
    budget_metric: str,
    budget_target: float,
    budget_slack: float = 1.0,
    metric: str = "test_accuracy",
    min_gain: float = 0.0,
    force: bool = False,
    log_path: Path | None = None,
    lock_timeout: float = 120.0,
) -> PromotionDecision:
    """Apply the promotion rule (module docstring) to one version; ``force`` moves the alias regardless.

    Holds ``<name>.promotion-lock`` while deciding, so concurrent promotions into one
    model decide one after the other (module docstring).
    """
    client = _client(client_or_uri)
    with _promotion_lock(client, name, lock_timeout):
        return _promote(client, name, version, budget_metric=budget_metric, budget_target=budget_target,
                        budget_slack=budget_slack, metric=metric, min_gain=min_gain, force=force, log_path=log_path)


@contextmanager
def _promotion_lock(client: MlflowClient, name: str, timeout: float) -> Iterator[None]:
    """Hold the registered model ``<name>.promotion-lock`` (created by one caller only) for the block."""
    lock = name + LOCK_SUFFIX
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.create_registered_model(lock, tags={"holder": f"{socket.gethostname()}:{os.getpid()}"},
                                           description=f"held while a promotion into {name} decides")
            break
        except MlflowException as exc:
            # RESOURCE_DOES_NOT_EXIST: the store's create, on a name clash, looks the holder's lock up,
            # and the holder released it in between; try again like any release
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                continue
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            held = client.get_registered_model(lock)
        except MlflowException as exc:  # released in between: try again
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            continue
        age = time.time() - held.creation_timestamp / 1000
        if age > STALE_LOCK_SECONDS:
            _release(client, lock)
        elif time.monotonic() > deadline:
            raise RegistryError(f"another promotion into {name} holds the registered model {lock} (held by "
                                f"{held.tags.get('holder', 'unknown')} for {age:.0f} s); retry when it ends, or "
                                "delete that registered model if no promotion is running")
        else:
            time.sleep(0.2)
    try:
        yield
    finally:
        _release(client, lock)


def _release(client: MlflowClient, lock: str) -> None:
    try:
        client.delete_registered_model(lock)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def _promote(client: MlflowClient, name: str, version: str | int, *, budget_metric: str, budget_target: float,
             budget_slack: float, metric: str, min_gain: float, force: bool,
             log_path: Path | None) -> PromotionDecision:
    """The promotion rule itself; the caller holds the lock."""
    candidate = resolve_version(client, name, version=version)
    accuracy = _float_tag(candidate, metric)
    if accuracy is None:
        raise RegistryError(f"{name} version {candidate.version} has no {metric} tag; register it with "
                            "deploy.registry.register_model")
    champion = _alias_version(client, name, CHAMPION)
    limit = budget_target * budget_slack
    in_budget, cost, budget_reason = _budget_check(candidate, budget_metric, limit, budget_target, budget_slack)
    better, champion_accuracy, compare_reason = _compare(candidate, champion, metric, accuracy, min_gain)
    reasons = [budget_reason, compare_reason]
    if in_budget and better:
        decision = "promoted"
    elif force:
        decision = "forced"
        reasons.insert(0, "forced by hand; the rule alone would keep the champion")
    else:
        decision = "kept"
    result = PromotionDecision(
        name=name, version=str(candidate.version), decision=decision, reasons=tuple(reasons), metric=metric,
        accuracy=accuracy, champion_version=str(champion.version) if champion else None,
        champion_accuracy=champion_accuracy, budget_metric=budget_metric, cost=cost, budget_limit=limit,
        time=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if log_path is not None:  # logged before it is applied: a process killed in between can finish it
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as log:
            log.write(json.dumps(result.to_dict()) + "\n")
    apply_decision(client, result)
    return result


def apply_decision(client_or_uri: MlflowClient | str, decision: PromotionDecision) -> None:
    """Move the champion alias (unless kept) and tag the version with the decision; idempotent.

    Re-checking the champion itself changes nothing, not even its tags.
    """
    client = _client(client_or_uri)
    if decision.promoted:
        client.set_registered_model_alias(decision.name, CHAMPION, decision.version)
    if decision.champion_version != decision.version:
        client.set_model_version_tag(decision.name, decision.version, "promotion_decision", decision.decision)
        client.set_model_version_tag(decision.name, decision.version, "promotion_reason", "; ".join(decision.reasons))


def logged_decision(log_path: Path, name: str, version: str | int) -> PromotionDecision | None:
    """The last decision ``log_path`` holds on ``name`` version ``version``, or None.

    A deploy stage killed after logging a decision finishes that one on resume
    (:func:`apply_decision`) instead of deciding again: a second look would find
    the version already champion and log a contradicting "kept".
    """
    if not log_path.exists():
        return None
    found = None
    for line in log_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill mid-write
        if isinstance(entry, dict) and entry.get("name") == name and entry.get("version") == str(version):
            found = entry
    return None if found is None else PromotionDecision.from_dict(found)


# ---- CLI (the parser lives in deploy/cli.py) -------------------------------------------
def run_promote(args: argparse.Namespace) -> int:
    """``autospace promote``: prints the decision; keeping the champion is an answer, not an error."""
    from pipeline.config import ConfigError, load_config
    from pipeline.run_dir import RunPaths
    from pipeline.tracking import tracking_uri

    if args.run_dir is not None:
        if not RunPaths(args.run_dir).config.exists():
            raise ConfigError(f"{args.run_dir} is not a run directory (no config.yaml)")
        config = load_config(RunPaths(args.run_dir).config, [f"out_dir={args.run_dir.resolve()}"])
        uri = tracking_uri(config)
        log_path = args.log or args.run_dir / "promotions.jsonl"
    else:
        if not args.model:
            raise ConfigError("--tracking-uri needs --model NAME")
        config = load_config(args.config)
        uri, log_path = args.tracking_uri, args.log
    decision = promote_if_better(
        existing_store(uri), args.model or config.mlflow.registered_model, args.version,
        budget_metric=config.budget.metric, budget_target=config.budget.target,
        budget_slack=config.mlflow.promote_budget_slack, min_gain=config.mlflow.promote_min_gain,
        force=args.force, log_path=log_path)
    print(json.dumps(decision.to_dict(), indent=2) if args.json else str(decision))
    return 0
