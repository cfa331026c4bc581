"""``autospace promote`` and ``autospace predict``: their parsers, with handlers imported on use.

The handlers live beside their logic (``deploy.registry.run_promote``,
``deploy.predict.run_predict``) and pull in MLflow and onnxruntime (~2 s); the
parsers here import neither, so ``autospace cost`` or ``data info`` start fast.
"""

from __future__ import annotations

import argparse
from importlib import import_module
from pathlib import Path
from typing import Callable

__all__ = ["register"]


def _on_use(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A handler that imports ``module.name`` only when its command runs."""
    def handler(args: argparse.Namespace) -> int:
        return getattr(import_module(module), name)(args)

    return handler


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``autospace promote`` and ``autospace predict``."""
    promote = subparsers.add_parser(
        "promote", help="apply the champion promotion rule to a registered version",
        description="Moves the alias champion to VERSION when it is within the budget and beats the champion "
                    "on the same test split (see docs/registry.md). The budget, min gain and slack come from "
                    "the run directory's config.yaml, else --config, else the embedded defaults.")
    where = promote.add_mutually_exclusive_group(required=True)
    where.add_argument("--run-dir", type=Path, help="a run directory (its MLflow store, model name and config)")
    where.add_argument("--tracking-uri", help="an MLflow tracking URI (needs --model)")
    promote.add_argument("--model", help="registered model name (default: the config's mlflow.registered_model)")
    promote.add_argument("--version", required=True, help="the version to consider")
    promote.add_argument("--config", type=Path, help="config whose budget and mlflow sections set the rule")
    promote.add_argument("--force", action="store_true", help="move the alias regardless of the rule (logged)")
    promote.add_argument("--log", type=Path, help="append the decision to this JSON Lines file "
                                                   "(default with --run-dir: RUN_DIR/promotions.jsonl)")
    promote.add_argument("--json", action="store_true", help="print the decision as JSON")
    promote.set_defaults(func=_on_use("deploy.registry", "run_promote"))

    predict = subparsers.add_parser(
        "predict", help="classify images with a registered model",
        description="INPUTS are image files (converted to the model's channels and size) or Parquet data files "
                    "as PATH.parquet[:SPLIT] (default split test).")
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="image file or PATH.parquet[:SPLIT]")
    predict.add_argument("--model", required=True,
                         help="models:/NAME@ALIAS, models:/NAME/VERSION, or NAME (its champion)")
    where = predict.add_mutually_exclusive_group()
    where.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    where.add_argument("--run-dir", type=Path, help="a run directory: use its MLflow store")
    predict.add_argument("--batch-size", type=int, default=256, help="images per onnxruntime call")
    predict.add_argument("--json", action="store_true", help="print a JSON list")
    predict.set_defaults(func=_on_use("deploy.predict", "run_predict"))
