"""``autospace train`` and ``autospace export``: an architecture or checkpoint a user brings.

What ``ARCH`` may be (:func:`resolve_arch`), in this order:

- a file ``autospace cost`` reads (interchange ``autospace-arch/1``, project arch JSON,
  a text file holding an arch string) with one model;
- an arch string (it contains ``stages=``);
- ``PATH:N``: the N-th point (from 0) of run directory PATH's Pareto front, in the
  order of ``summary.json``'s ``pareto_front`` (the ``#`` column of the front table
  ``autospace run`` prints), or the N-th model of an arch file holding several.

With ``RUN_DIR:N`` the run's ``config.yaml`` is the base config (its data set and
retrain recipe) unless ``--config`` is given, the model is registered in the run's own
registry (so the champion rule compares it with the run's champion, on the same test
split) unless ``mlflow.tracking_uri`` is set, and the training directory defaults to
``RUN_DIR/train/<arch id>`` (else ``runs/train/<arch id>``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pipeline.config import Config, ConfigError, load_config
from pipeline.cost_cli import read_archs
from pipeline.progress import Progress
from pipeline.run_cli import add_config_arguments
from pipeline.run_dir import RunPaths, check_out_dir, read_run_config
from pipeline.run_tables import format_deploy
from pipeline.search_job import dataset_info
from pipeline.tables import arch_id, arch_label, human
from pipeline.tracking import tracking_uri
from spaces.arch import Arch
from spaces.budget import LATENCY_BATCH, measured_latency
from spaces.errors import cut
from spaces.search import CheckpointError

__all__ = ["register", "resolve_arch"]

TRAIN_ROOT = Path("runs/train")  # default --out: runs/train/<arch id>
EXPORT_ROOT = Path("runs/export")  # default --out: runs/export/<arch id>
_PHASES = ("retrain", "export", "register")


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train", help="retrain one architecture (string, file or RUN_DIR:N), export, register, promote",
        description="Trains ARCH from scratch with the retrain recipe (tuning, then Ray Train), exports it to "
                    "TorchScript and ONNX (onnxruntime parity checked), registers it in MLflow and applies the "
                    "champion rule. ARCH is an arch string, an arch file (as `autospace cost` reads), or PATH:N: "
                    "the N-th point (from 0, the # column) of run directory PATH's Pareto front, or the N-th model "
                    "of a multi-model arch file. With RUN_DIR:N the run's config and registry are the defaults. "
                    "See docs/retrain.md.")
    train.add_argument("arch", metavar="ARCH|PATH:N", help="arch string, arch file, or RUN_DIR:N")
    add_config_arguments(train, out_help=f"training directory (default RUN_DIR/train/<arch id> for RUN_DIR:N, "
                                         f"else {TRAIN_ROOT}/<arch id>)",
                         config_help="YAML config (data, retrain, export, mlflow, budget); default: the run's "
                                     "config.yaml for RUN_DIR:N, else the embedded defaults")
    train.add_argument("--no-tune", action="store_true",
                       help="skip tuning: train on the centre of the retrain ranges (collapse a range to fix a value)")
    train.add_argument("--json", action="store_true", help="print the record (train.json) as JSON")
    train.add_argument("--wide", action="store_true", help="the full arch string instead of its 8-hex id")
    train.set_defaults(func=run_train)

    export = subparsers.add_parser(
        "export", help="export a trained checkpoint to TorchScript and ONNX (parity checked)",
        description="CHECKPOINT is a retrain's weights.pt (the arch is read from result.json beside it) or "
                    "checkpoint.pt (it records its arch), or any ChildNet state dict with --arch. The data set "
                    "(--config / --set data.path=...) gives the normalisation, the native input size and the "
                    "parity images. Files are read with torch.load(weights_only=True). See docs/export.md.")
    export.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="weights.pt or checkpoint.pt")
    export.add_argument("--arch", help="the architecture the weights belong to (string or file), if not recorded")
    add_config_arguments(export, out_help=f"where the files go (default {EXPORT_ROOT}/<arch id>)",
                         config_help="YAML config (data and export sections); omit for the embedded defaults")
    export.add_argument("--json", action="store_true", help="print the export report as JSON")
    export.set_defaults(func=run_export)


# ---- which architecture --------------------------------------------------------------------
def resolve_arch(source: str) -> tuple[Arch, Path | None]:
    """The architecture ``source`` names, and the run directory it came from (``RUN_DIR:N``) or None."""
    if (len(source) <= 4096 and Path(source).is_file()) or "stages=" in source:
        return _one_of(source, None), None
    path, sep, index = source.rpartition(":")
    if not sep or not path:
        raise ConfigError(f"{cut(repr(source))} is neither an arch file, an arch string (they contain 'stages='), "
                          "nor RUN_DIR:N")
    if not index.isdigit():
        raise ConfigError(f"{cut(repr(source))}: N in PATH:N must be a whole number from 0, got {cut(repr(index))}")
    if Path(path).is_file():
        return _one_of(path, int(index)), None
    paths = RunPaths(Path(path))
    if not paths.config.is_file():
        raise ConfigError(f"{cut(path)} in {cut(repr(source))} is neither an arch file nor a run directory "
                          "(no config.yaml)")
    return _front_point(paths, int(index)), paths.root


def _one_of(path: str, index: int | None) -> Arch:
    archs = read_archs(path)
    names = ", ".join(cut(a.name, 40) for a in archs[:5]) + (", ..." if len(archs) > 5 else "")
    if index is None and len(archs) > 1:
        raise ConfigError(f"{path} holds {len(archs)} architectures ({names}); pick one with {path}:N, "
                          f"N from 0 to {len(archs) - 1}")
    if index is not None and index >= len(archs):
        raise ConfigError(f"{path} holds {len(archs)} architecture(s) ({names}); N must be below {len(archs)}, "
                          f"got {index}")
    return archs[index or 0].arch


def _front_point(paths: RunPaths, index: int) -> Arch:
    if not paths.summary.is_file():
        raise ConfigError(f"{paths.root} has no summary.json yet: its Pareto front is written when the run "
                          f"finishes (autospace status {paths.root}); or give an arch string")
    try:
        front = json.loads(paths.summary.read_text())["pareto_front"]
        archs = [point["arch"] for point in front]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"{paths.summary} has no readable pareto_front ({cut(str(err))}); restore it, or give "
                          "an arch string") from None
    if index >= len(archs):
        raise ConfigError(f"the Pareto front of {paths.root} has {len(archs)} point(s), numbered from 0; got "
                          f"{index}")
    return Arch.parse(archs[index])


# ---- configuration -------------------------------------------------------------------------
def _config(args: argparse.Namespace, arch: Arch, run_dir: Path | None, root: Path) -> Config:
    """``--config`` (or the run's own config) with ``--set`` applied, rooted at ``--out`` or root/<arch id>."""
    base, first = args.config, []
    if run_dir is not None and args.config is None:
        base = RunPaths(run_dir).config
        first = [f"mlflow.tracking_uri={tracking_uri(read_run_config(run_dir))}"]  # the run's registry
    config = load_config(base, [*first, *args.overrides])
    out = args.out or (run_dir / "train" if run_dir is not None else root) / arch_id(arch.encode())
    check_out_dir(out)
    return config.model_copy(update={"out_dir": out.resolve()})


# ---- commands --------------------------------------------------------------------------------
def run_train(args: argparse.Namespace) -> int:
    from deploy.retrain import untuned_hyperparameters, validate_archs  # Ray, MLflow load only when used
    from deploy.train import promotions_log, train_arch

    arch, run_dir = resolve_arch(args.arch)
    config = _config(args, arch, run_dir, TRAIN_ROOT)
    data_path, _ = dataset_info(config)
    validate_archs([arch], data_path)  # input errors before anything is written or started
    untuned_hyperparameters(config)  # which checks the ranges tuning samples too
    if "onnx" not in config.export.formats:
        raise ConfigError(f"export.formats={list(config.export.formats)}: train registers the ONNX file, so "
                          "'onnx' must be one of them (autospace export writes TorchScript alone)")
    bar = Progress(len(_PHASES), "train", "step")
    try:
        record = train_arch(arch, config, data_path, tuned=not args.no_tune,
                            on_phase=lambda phase: bar.update(_PHASES.index(phase), phase=phase))
        bar.update(len(_PHASES), phase="done")
    finally:
        bar.close()
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    print(_train_report(record, config, promotions_log(config), args.wide))
    return 0


def _train_report(record: dict[str, Any], config: Config, log: Path, wide: bool) -> str:
    retrain, promotion = record["retrain"], record["promotion"]
    tuning = retrain.get("tuning")
    how = f"tuned ({len(tuning['trials'])} trials)" if tuning else "untuned (centre of the retrain ranges)"
    uri, name, version = record["registry"]["tracking_uri"], record["registry"]["registered_model"], record["version"]
    files = record["export"]["paths"]
    return "\n".join([
        format_deploy({"models": [record]}, wide), "",
        f"arch {arch_label(record['arch'], wide)}: {retrain['epochs']} epochs, {how}",
        "  hyper-parameters: " + " ".join(f"{k}={v:.3g}" for k, v in retrain["hparams"].items()),
        f"training directory: {config.out_dir}  (record: train.json)",
        f"  weights:  {retrain['weights_path']}",
        "  exported: " + ", ".join(str(path) for path in files.values()),
        f"registered {name} v{version} in {uri}",
        f"  champion rule: {promotion['decision']}: " + "; ".join(promotion["reasons"]) + f" (logged in {log})",
        f"  predict: autospace predict --tracking-uri {uri} --model models:/{name}/{version} INPUT...",
        f"  serve:   MLFLOW_TRACKING_URI={uri} mlflow models serve -m models:/{name}/{version} "
        "--env-manager local --host 127.0.0.1 -p 5001  (docs/serving.md)",
    ])


def run_export(args: argparse.Namespace) -> int:
    from deploy.retrain import validate_archs
    from deploy.stage import DeployInputs, export_weights, read_weights

    if not args.checkpoint.is_file():
        raise CheckpointError(f"checkpoint {args.checkpoint} does not exist or is not a file")
    _, recorded = read_weights(args.checkpoint)
    if args.arch is not None:
        arch, _ = resolve_arch(args.arch)
    elif recorded is not None:
        arch = Arch.parse(recorded)
    else:
        raise ConfigError(f"{args.checkpoint} does not record its architecture (no retrain result.json beside it); "
                          "pass --arch ARCH")
    config = _config(args, arch, None, EXPORT_ROOT)
    data_path, _ = dataset_info(config)
    validate_archs([arch], data_path)
    report = export_weights(arch.encode(), args.checkpoint, DeployInputs.of(data_path), config, config.out_dir)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    latency = report["latency_ms"]
    print(f"exported {arch_label(arch.encode())} from {args.checkpoint} to {config.out_dir}")
    for fmt, path in report["paths"].items():
        print(f"  {path}  {human(report['file_sizes'][fmt])}B, max abs diff to eager torch "
              f"{report['parity_max_abs_diff'][fmt]:.2g} (tolerance {report['atol']:g})")
    print(f"  {config.out_dir / 'export_report.json'}: contract, parity, latency")
    print(f"latency at batch {LATENCY_BATCH} (ms): "
          + ", ".join(f"{runtime} {measured_latency(latency, runtime):.3f}" for runtime in latency))
    return 0
