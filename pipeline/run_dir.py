"""A run directory: its layout, its status, and how a run is started or resumed in it.

No Ray or MLflow here, so ``autospace status`` answers instantly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Config, ConfigError
from spaces.atomic import write_text_atomically

__all__ = ["RunPaths", "prepare_run_dir", "read_status", "write_json"]


class RunPaths:
    """Where everything of one run lives."""

    def __init__(self, out_dir: Path) -> None:
        self.root = Path(out_dir)
        self.config = self.root / "config.yaml"
        self.run = self.root / "run.json"
        self.state = self.root / "evolution.json"
        self.status = self.root / "status.json"
        self.summary = self.root / "summary.json"
        self.pareto = self.root / "pareto.png"
        self.final = self.root / "final"

    def generation(self, n: int) -> Path:
        return self.root / "generations" / f"gen-{n}"


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON write (temp file, then rename)."""
    write_text_atomically(path, json.dumps(data, indent=2))


def read_status(out_dir: Path) -> dict[str, Any]:
    """What ``autospace status`` shows: the saved state's progress and the live status file."""
    paths = RunPaths(out_dir)
    status = json.loads(paths.status.read_text()) if paths.status.exists() else {}
    state = json.loads(paths.state.read_text()) if paths.state.exists() else None
    history = state["history"] if state else []
    return {
        "status": status,
        "generations_done": len(history),
        "best_fitness": max((h["best_reward"] for h in history if h["best_reward"] is not None), default=None),
        "best_arch": history[-1]["champion"] if history else None,  # the elite's best; not the registry's champion
        "finished": status.get("phase") == "done",
    }


def _absolute(config: Config) -> Config:
    """Paths made absolute, so Ray actors and workers (other working directories) find the same files."""
    data = config.data.model_copy(update={"path": config.data.path.resolve() if config.data.path else None,
                                          "cache_dir": config.data.cache_dir.expanduser().resolve()})
    space = config.space.model_copy(update={"file": config.space.file.resolve() if config.space.file else None})
    return config.model_copy(update={"out_dir": config.out_dir.resolve(), "data": data, "space": space})


def prepare_run_dir(config: Config, resume: bool) -> Config:
    """A new run writes its config; a resumed one reads it back (the CLI may not change it)."""
    config = _absolute(config)
    paths = RunPaths(config.out_dir)
    if resume:
        if not paths.config.exists():
            raise ConfigError(f"{paths.root} is not a run directory (no config.yaml); start it with autospace run")
        return _absolute(Config.model_validate(yaml.safe_load(paths.config.read_text())))
    if paths.state.exists() or paths.summary.exists():
        raise ConfigError(f"{paths.root} already holds a run; continue it with `autospace resume {paths.root}` "
                          "or choose another --out")
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return config


