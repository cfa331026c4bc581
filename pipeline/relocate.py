"""Make a copied or moved run directory its own: every recorded absolute path follows it.

A run records absolute paths of its own files: MLflow's SQLite store holds the
artifact locations of its experiment, runs and model versions; ``deploy.json``
and the retrain records hold exported model and weight files. When the
directory is copied or moved, those still point at the old place, so resuming
the copy would write into the original (or recreate it). :func:`relocate_run`
rewrites every path under the old root to the same path under the new one,
before anything opens the store. Stdlib only: no MLflow is needed to do it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

__all__ = ["relocate_run"]


def _prefixes(old: Path, new: Path) -> list[tuple[str, str]]:
    """(old, new) spellings of the root: a ``file://`` URI, a SQLite store URI and a plain path."""
    return [(old.as_uri(), new.as_uri()), (f"sqlite:///{old}", f"sqlite:///{new}"), (str(old), str(new))]


def _moved(text: str, prefixes: list[tuple[str, str]]) -> str:
    for old, new in prefixes:
        if text == old or text.startswith(old + "/"):
            return new + text[len(old):]
    return text


def _walk(value: Any, prefixes: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        return _moved(value, prefixes)
    if isinstance(value, list):
        return [_walk(v, prefixes) for v in value]
    if isinstance(value, dict):
        return {k: _walk(v, prefixes) for k, v in value.items()}
    return value


def _relocate_json(path: Path, prefixes: list[tuple[str, str]]) -> None:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return  # not a record of ours; resume reports the run's own files if they are broken
    moved = _walk(data, prefixes)
    if moved != data:
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(moved, indent=2))
        os.replace(tmp, path)


def _relocate_sqlite(db: Path, prefixes: list[tuple[str, str]]) -> None:
    """Rewrite the root prefix in every text column of every table (MLflow's schema changes across versions)."""
    with sqlite3.connect(db) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')
                       if any(t in (r[2] or "").upper() for t in ("CHAR", "TEXT", "CLOB"))]
            for column in columns:
                for old, new in prefixes:
                    con.execute(f'UPDATE "{table}" SET "{column}" = ? || substr("{column}", ?) '
                                f'WHERE "{column}" = ? OR substr("{column}", 1, ?) = ?',
                                (new, len(old) + 1, old, len(old) + 1, old + "/"))


def relocate_run(root: Path, old_root: Path) -> None:
    """Point every absolute path recorded under ``root`` that names ``old_root`` at ``root`` instead."""
    root, old_root = Path(root), Path(old_root)
    prefixes = _prefixes(old_root, root)
    db = root / "mlflow.db"
    if db.is_file():
        _relocate_sqlite(db, prefixes)
    for path in root.rglob("*.json"):
        if path.is_file():
            _relocate_json(path, prefixes)
