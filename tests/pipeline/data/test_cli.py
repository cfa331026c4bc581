"""``autospace data import`` / ``info`` (pipeline.data.cli)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import DataError
from pipeline.data import cli as data_cli
from tests.pipeline.data.formats import balanced_labels, random_images


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="autospace")
    data_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_import_then_info_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "d.npz", x_train=random_images(20, 5, 5), y_train=balanced_labels(20, 2))
    out = tmp_path / "nested" / "d.parquet"
    args = parse(["data", "import", "npz", str(tmp_path / "d.npz"), str(out), "--val-fraction", "0.2", "--seed", "3"])
    assert args.func(args) == 0
    summary = capsys.readouterr().out
    assert "train 16, val 4" in summary and "1x5x5" in summary and str(out) in summary

    args = parse(["data", "info", str(out), "--json"])
    assert args.func(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["counts"] == {"train": 16, "val": 4}
    assert info["shape"] == [1, 5, 5] and info["classes"] == ["0", "1"]
    assert info["val_seed"] == 3 and info["val_fraction"] == 0.2
    assert info["path"] == str(out) and info["source"].startswith("npz:")

    args = parse(["data", "import", "idx", str(tmp_path / "missing"), str(out)])
    with pytest.raises(DataError, match="missing does not exist"):
        args.func(args)
