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

from evolve.fitness import average_evidence, cell_evidence, moving_average
from pipeline.config import Config, ConfigError
from pipeline.run_dir import RunPaths, read_run_config
from spaces.errors import cut
from spaces.space import SearchSpace

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
    spaces: dict[int, list[dict[str, Any]]]  # generation -> its candidate spaces (spaces.json)
    results: dict[int, list[dict[str, Any]]]  # generation -> its evaluations (results.json)

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
    state = _json(paths.state)
    generations = [h["generation"] for h in (state or {}).get("history", [])]
    return RunRecords(root=root, config=config, state=state, status=_json(paths.status) or {},
                      summary=_json(paths.summary), deploy=_json(root / "deploy.json"),
                      spaces={g: _json(paths.generation(g) / "spaces.json") or [] for g in generations},
                      results={g: _json(paths.generation(g) / "results.json") or [] for g in generations})


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
    """Per layer, each cell's fitness over the generations, replayed from the saved search results.

    The state file keeps only the latest fitness; every generation's is recomputed
    with the evolution's own rule (:mod:`evolve.fitness`: evidence = softmax
    probability x number of choices, averaged over the spaces offering the cell,
    folded in with ``fitness_momentum``) from ``results.json`` and ``spaces.json``, and
    the population of each generation is the report's ``kept`` + ``dropped`` cells.
    """
    history = records.history
    generations = [h["generation"] for h in history]
    heats = {(c["stage"], c["layer"]): LayerHeat(c["stage"], c["layer"], generations)
             for c in (history[0]["layers"] if history else [])}
    if not heats:
        return []
    momentum = records.state["settings"]["fitness_momentum"]
    value: dict[tuple[int, int, str], tuple[float, int]] = {}  # (stage, layer, cell) -> (fitness, evaluations)
    for report in history:
        g = report["generation"]
        evaluations = [(SearchSpace.from_dict(space), entry["result"])
                       for space, entry in zip(records.spaces.get(g, []), records.results.get(g, [])) if entry["ok"]]
        evidence = average_evidence([cell_evidence(space, result["probabilities"]) for space, result in evaluations])
        for change in report["layers"]:
            heat = heats[(change["stage"], change["layer"])]
            for cell in change["kept"] + change["dropped"]:  # the population this generation scored
                key = (heat.stage, heat.layer, cell)
                fitness, count = value.get(key, (1.0, 0))
                if key in evidence:
                    fitness, count = moving_average(fitness, evidence[key], momentum, first=count == 0), count + 1
                value[key] = (fitness, count)
                if cell not in heat.fitness:
                    heat.cells.append(cell)
                    heat.fitness[cell] = {}
                heat.fitness[cell][g] = fitness if count else None
            heat.dropped[g] = set(change["dropped"])
            heat.added[g + 1] = set(change["added"])
            for cell in change["dropped"]:
                value.pop((heat.stage, heat.layer, cell), None)  # a cell mutated back in later starts afresh
    return sorted(heats.values(), key=lambda h: (h.stage, h.layer))
