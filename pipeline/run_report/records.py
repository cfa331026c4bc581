"""What a run directory holds, read once for the report: config, evolution history, per-generation results, deploy.

A run in progress has only some of it (no ``summary.json`` before the final
search, no ``deploy.json`` before the deploy stage); every section of the report
says what it lacks instead of failing. A file that exists but cannot be read is
a ConfigError naming it, like everywhere else a run directory is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Config, ConfigError
from pipeline.run_dir import RunPaths, read_run_config
from spaces.errors import cut

__all__ = ["LayerHeat", "RunRecords", "layer_heat", "read_records"]


@dataclass
class RunRecords:
    """One run directory's files, parsed (``None`` where the run has not written a file yet)."""

    root: Path
    config: Config
    state: dict[str, Any] | None
    status: dict[str, Any]
    summary: dict[str, Any] | None
    deploy: dict[str, Any] | None

    @property
    def history(self) -> list[dict[str, Any]]:
        """The per-generation reports of the evolution (best/mean reward, spaces, layer changes).

        A report without its spaces or layer changes (a hand-made state) reads as one with none.
        """
        return [{"spaces": [], "layers": [], "failed_spaces": 0, **h} for h in (self.state or {}).get("history", [])]


def _json(path: Path) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} cannot be read ({cut(str(err))}); the report needs it as the run wrote it") \
            from None


def read_records(root: Path) -> RunRecords:
    """Everything the report draws from ``root`` (a ConfigError if it is not a run directory)."""
    config = read_run_config(root)
    paths = RunPaths(root)
    return RunRecords(root=root, config=config, state=_json(paths.state), status=_json(paths.status) or {},
                      summary=_json(paths.summary), deploy=_json(root / "deploy.json"))


@dataclass
class LayerHeat:
    """One searchable layer's population over the generations, for a heat map.

    ``fitness[cell][g]`` is the cell's fitness after generation ``g`` scored it (``None``:
    in the population, no evidence yet); a cell absent from ``fitness[cell]`` was not in
    the population then. ``added[g]`` entered the population for generation ``g`` (mutants
    of the previous one); ``dropped[g]`` left it after generation ``g``.
    """

    stage: int
    layer: int
    generations: list[int]
    cells: list[str] = field(default_factory=list)
    fitness: dict[str, dict[int, float | None]] = field(default_factory=dict)
    added: dict[int, set[str]] = field(default_factory=dict)
    dropped: dict[int, set[str]] = field(default_factory=dict)


def layer_heat(records: RunRecords) -> list[LayerHeat]:
    """Per layer, each cell's fitness over the generations, as each generation's report recorded it.

    A generation's ``layers`` entries hold the fitness of the population it scored
    (``None``: not evaluated yet) and the cells it added and dropped.
    """
    history = records.history
    generations = [h["generation"] for h in history]
    heats = {(c["stage"], c["layer"]): LayerHeat(c["stage"], c["layer"], generations)
             for c in (history[0]["layers"] if history else [])}
    for report in history:
        g = report["generation"]
        for change in report["layers"]:
            heat = heats[(change["stage"], change["layer"])]
            for cell, fitness in change["fitness"].items():
                if cell not in heat.fitness:
                    heat.cells.append(cell)
                    heat.fitness[cell] = {}
                heat.fitness[cell][g] = fitness
            heat.dropped[g] = set(change["dropped"])
            heat.added[g + 1] = set(change["added"])
    return sorted(heats.values(), key=lambda h: (h.stage, h.layer))
