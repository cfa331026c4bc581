"""A run directory: its layout, its status, and how a run is started or resumed in it.

No Ray or MLflow here, so ``autospace status`` answers instantly.

Liveness: the driving process records itself in ``status.json``
(:func:`record_driver`) and touches the file while it waits (:func:`heartbeat`),
so the file's modification time is when the run was last seen alive.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Config, ConfigError, load_config
from pipeline.driver import driver_alive, driver_record
from pipeline.placement import run_nodes
from pipeline.relocate import relocate_run
from pipeline.run_clock import worked_seconds
from spaces.atomic import write_text_atomically
from spaces.errors import cut

__all__ = ["FAULT_KILL_ENV", "RunPaths", "check_out_dir", "check_resumable", "heartbeat", "kill_run_at",
           "prepare_run_dir", "read_run_config", "read_status", "record_driver", "resume_run_dir", "set_ray_address",
           "write_json"]

FAULT_KILL_ENV = "AUTOSPACE_FAULT_KILL_AT"  # fault drills only: the step at which the run SIGKILLs itself


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
        self.slots = self.root / "slots"

    def generation(self, n: int) -> Path:
        return self.root / "generations" / f"gen-{n}"


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON write (temp file, then rename)."""
    write_text_atomically(path, json.dumps(data, indent=2))


def _read_json(path: Path, kind: type, fix: str) -> Any:
    """A run-directory JSON file of the expected top-level type; a ConfigError naming it and the fix otherwise."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} cannot be read ({cut(str(err))}); {fix}") from None
    if not isinstance(data, kind):
        raise ConfigError(f"{path} holds a {type(data).__name__} where the run writes a {kind.__name__}; {fix}")
    return data


_STATUS_FIX = "delete it (the run rewrites it)"
PROMOTIONS = "promotions.jsonl"  # every promotion decision, appended by the deploy stage and `autospace promote`
_STATE_FIX = "restore it from a copy of the run, or start over with `autospace run --out NEW_DIR`"
_SUMMARY_FIX = "delete it to redo the final search on resume"
_RUN_FIX = "restore it, or delete it to track the resumed run as a new MLflow run"


def _history(state: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    history = state.get("history")
    if not isinstance(history, list) or not all(isinstance(h, dict) and "best_reward" in h and "champion" in h
                                                and (h["best_reward"] is None
                                                     or isinstance(h["best_reward"], (int, float)))
                                                for h in history):
        raise ConfigError(f"{path} has no valid generation history (a list of generation reports); {_STATE_FIX}")
    return history


def read_status(out_dir: Path) -> dict[str, Any]:
    """What ``autospace status`` shows: the saved state's progress and the live status file.

    ``running`` is whether the run's driver is alive (None: it cannot be told from here,
    another host or a run that recorded no driver); ``last_seen`` is when the run last
    wrote or touched its status file (seconds since the epoch); ``nodes`` is where the
    searches so far ran (:func:`pipeline.placement.run_nodes`); ``worked_seconds`` is the
    run's clock as last saved (:mod:`pipeline.run_clock`).
    """
    paths = RunPaths(out_dir)
    status = _read_json(paths.status, dict, _STATUS_FIX) if paths.status.exists() else {}
    history = _history(_read_json(paths.state, dict, _STATE_FIX), paths.state) if paths.state.exists() else []
    ended = status.get("phase") in ("done", "failed")
    best_reward = max((h["best_reward"] for h in history if h["best_reward"] is not None), default=None)
    best_arch = history[-1]["champion"] if history else None  # the elite's best; not the registry's champion
    if paths.summary.exists():  # after the final search: the run's best, which may come from that search
        best = _read_json(paths.summary, dict, _SUMMARY_FIX).get("best")
        if isinstance(best, dict) and best.get("arch"):
            best_reward, best_arch = best.get("reward", best_reward), best["arch"]
    return {
        "status": status,
        "generations_done": len(history),
        "best_reward": best_reward,
        "best_arch": best_arch,
        "finished": status.get("phase") == "done",
        "running": False if ended else driver_alive(status.get("driver")),
        "last_seen": paths.status.stat().st_mtime if paths.status.exists() else None,
        "registry_champion": _logged_champion(paths.root / PROMOTIONS),
        "nodes": run_nodes(paths.root),
        "worked_seconds": worked_seconds(paths.root),
    }


def _logged_champion(path: Path) -> dict[str, Any] | None:
    """The version the last logged promotion gave the champion alias (``promote --force`` included).

    None without a log; ``{"version": None}`` when decisions were logged but none promoted.
    """
    if not path.exists():
        return None
    champion: dict[str, Any] = {"version": None}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            decision = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(f"{path} line {number} is not JSON; it is the promotion log, restore or delete it") \
                from None
        if isinstance(decision, dict) and decision.get("promoted"):
            champion = {k: decision.get(k) for k in ("name", "version", "decision", "time")}
    return champion


def record_driver(out_dir: Path) -> None:
    """Record this process in ``status.json`` as the run's driver, before the run starts.

    A run that failed earlier is being resumed: its failure is no longer the news.
    """
    paths = RunPaths(out_dir)
    current = _read_json(paths.status, dict, _STATUS_FIX) if paths.status.exists() else {}
    if current.get("phase") == "failed":
        current = {**{k: v for k, v in current.items() if k != "error"}, "phase": "resuming"}
    write_json(paths.status, {**current, "driver": driver_record(), "updated_at": time.time()})


def kill_run_at(point: str, out_dir: Path) -> None:
    """Fault drills only: SIGKILL the run at ``point`` when ``$AUTOSPACE_FAULT_KILL_AT`` names it.

    What a drill's ``kill -9`` of the CLI's process group does from outside, at a
    step too short to hit from there: the recorded driver's process group (the CLI,
    and its local Ray's GCS and raylet), then this process (a Ray worker has a
    process group of its own). Tests start the CLI in a session of its own.
    """
    if os.environ.get(FAULT_KILL_ENV) != point:
        return
    driver = _read_json(RunPaths(out_dir).status, dict, _STATUS_FIX)["driver"]
    os.killpg(os.getpgid(driver["pid"]), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def heartbeat(out_dir: Path) -> None:
    """Touch ``status.json`` (not rewrite it: the run's actor owns its content): the run was seen now."""
    try:
        os.utime(RunPaths(out_dir).status)
    except FileNotFoundError:
        pass


def check_out_dir(out_dir: Path) -> None:
    """A run directory must be a directory (or not exist yet)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"out_dir {out_dir} is a file, not a directory; choose another --out")


def _saved_config(paths: RunPaths) -> Config:
    if not paths.root.is_dir() or not paths.config.is_file():
        raise ConfigError(f"{paths.root} is not a run directory (no config.yaml); start it with autospace run")
    return load_config(paths.config)


def read_run_config(out_dir: Path) -> Config:
    """The config a run directory was started with, rooted at the directory itself (which may have moved)."""
    paths = RunPaths(out_dir)
    return _saved_config(paths).model_copy(update={"out_dir": paths.root.resolve()})


def check_resumable(paths: RunPaths) -> None:
    """Every file resume will read is readable and of the right shape, checked before anything starts."""
    from evolve.loop import Evolution  # the state's own reader is its validation

    read_status(paths.root)
    if paths.run.exists():
        run = _read_json(paths.run, dict, _RUN_FIX)
        if not isinstance(run.get("parent_run_id"), (str, type(None))):
            raise ConfigError(f"{paths.run}: parent_run_id must be an MLflow run id; {_RUN_FIX}")
    if paths.summary.exists():
        summary = _read_json(paths.summary, dict, _SUMMARY_FIX)
        shapes = {"best": dict, "pareto_front": list, "generations": list, "mlflow": dict}
        wrong = [key for key, kind in shapes.items() if not isinstance(summary.get(key), kind)]
        if wrong:
            raise ConfigError(f"{paths.summary} lacks valid {', '.join(wrong)}; {_SUMMARY_FIX}")
    elif paths.state.exists():
        try:
            Evolution.from_dict(_read_json(paths.state, dict, _STATE_FIX))
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
            raise ConfigError(f"{paths.state} is not a valid evolution state ({cut(str(err))}); {_STATE_FIX}") \
                from None


def _absolute(config: Config) -> Config:
    """Paths made absolute, so Ray actors and workers (other working directories) find the same files."""
    data = config.data.model_copy(update={"path": config.data.path.resolve() if config.data.path else None,
                                          "cache_dir": config.data.cache_dir.expanduser().resolve()})
    space = config.space.model_copy(update={"file": config.space.file.resolve() if config.space.file else None})
    return config.model_copy(update={"out_dir": config.out_dir.resolve(), "data": data, "space": space})


def _write_config(paths: RunPaths, config: Config) -> None:
    write_text_atomically(paths.config, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def set_ray_address(out_dir: Path, address: str | None) -> str | None:
    """Point a run at another Ray cluster (one restarted at a new address); returns the old ``ray.address``.

    Only where the run executes changes, so the resume is still the same run; saved in
    ``config.yaml`` so that later resumes go there too.
    """
    paths = RunPaths(Path(out_dir).resolve())
    saved = _saved_config(paths)
    if address != saved.ray.address:
        _write_config(paths, saved.model_copy(update={"ray": saved.ray.model_copy(update={"address": address})}))
    return saved.ray.address


def resume_run_dir(out_dir: Path) -> Config:
    """The run in ``out_dir``, checked and made its own if it was copied or moved (never the original's)."""
    paths = RunPaths(Path(out_dir).resolve())
    saved = _saved_config(paths)
    check_resumable(paths)
    config = _absolute(saved.model_copy(update={"out_dir": paths.root}))
    if saved.out_dir.expanduser().resolve() != paths.root:
        relocate_run(paths.root, saved.out_dir.expanduser().resolve())
        _write_config(paths, config)
    return config


def prepare_run_dir(config: Config) -> Config:
    """A new run's directory: refused if it holds a run already; the validated config is written into it."""
    config = _absolute(config)
    paths = RunPaths(config.out_dir)
    check_out_dir(paths.root)
    if paths.state.exists() or paths.summary.exists():
        raise ConfigError(f"{paths.root} already holds a run; continue it with `autospace resume {paths.root}` "
                          "or choose another --out")
    paths.root.mkdir(parents=True, exist_ok=True)
    _write_config(paths, config)
    return config
