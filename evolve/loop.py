"""The AutoSpace outer loop: evolve per-layer cell populations by fitness measured on supernets.

Each generation samples candidate search spaces — per layer, K cells chosen by
tournament on fitness, always with the reference architecture's cell, so every
space contains the reference — and hands them to an injected evaluator (a
supernet search per space; on Ray in the pipeline, in-process in tests). The
searches' cell accuracy effects update each cell's fitness (:mod:`evolve.fitness`);
the ranked architectures of each search give its space a reward with a standard
error, which keeps an elite whose best is the run's best architecture so far.
The elite is not trusted on one score: from the second generation on, the best
elite space is proposed again and re-scored, and its reward is the mean of all
its scores. Then the worst cells of every layer are replaced by mutants of the
best, each starting from a prior shrunk from its parent's fitness (and, in the
pipeline's weight pool, from its parent's weights: the report's ``parents``).

Where the searches learn the input resolution from their accuracy
(``EvolutionSettings.search_learns_resolution``), each search's learned
P(resolution) is the resolutions' evidence too, as the paper scores cells by
their α: it guides the genome's resolution mutation and prunes the learned
space's resolutions (``docs/evolution.md``).

Continuity (what a generation learned carries into the next) is the
evaluator's side: :meth:`Evolution.cell_logits` gives each space's searches op
logits that start from the cells' fitness, and the pipeline keeps a pool of
supernet weights per cell and place (``spaces.supernet.Supernet.cell_weights``).

The whole state is plain JSON, saved atomically after every generation, so a
run resumes exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from evolve.cells import VOCABULARY_SIZE, mutate_cell, random_cell
from evolve.fitness import (MUTANT_PRIOR_SHRINK, average_evidence, cell_evidence, moving_average,
                            resolution_evidence, space_reward, space_score)
from evolve.genome import Reference, crossover, mutate_genome
from spaces.arch import Arch
from spaces.atomic import write_text_atomically
from spaces.budget import recorded_cost
from spaces.cost import arch_cost
from spaces.search import DERIVED_FIELDS, SearchResult
from spaces.space import SKIP, SearchSpace

__all__ = ["EvolutionSettings", "CellRecord", "Evolution", "Evaluator", "STATE_FORMAT"]

STATE_FORMAT = "autospace-evolution/2"
EFFECT_PER_LOGIT = 0.02  # a cell 2 accuracy points better than its neighbours starts one logit ahead
MAX_PRIOR_LOGIT = 2.0  # ... and never more than this: the search must still be able to change its mind
COST_RANGE_SAMPLES = 200  # uniform members priced for the cost range a space spans
Evaluator = Callable[[list[SearchSpace]], Sequence[SearchResult | None]]
"""Scores candidate spaces: per space its search's result, or None if the search failed."""


@dataclass(frozen=True)
class EvolutionSettings:
    """The loop's knobs (the pipeline fills them from its config's evolution and budget sections)."""

    generations: int = 3
    spaces_per_generation: int = 4
    population_per_layer: int = 8
    cells_per_layer: int = 3
    tournament_size: int = 3
    elite: int = 1
    replace_fraction: float = 0.25
    fitness_momentum: float = 0.5
    wall_time_minutes: float | None = None
    seed: int = 0
    metric: str = "madds"
    target: float = 5e6
    reward_exponent: float = -0.07
    # whether the searches' learned P(resolution) carries their accuracy (arch_gradient hybrid or reinforce;
    # with straight-through gates only the cost term moves it): only then is it the resolutions' fitness
    search_learns_resolution: bool = False

    def __post_init__(self) -> None:
        if self.population_per_layer > VOCABULARY_SIZE:
            raise ValueError(f"population_per_layer={self.population_per_layer} exceeds the {VOCABULARY_SIZE} "
                             "distinct cells the vocabulary (evolve/cells.py) can make")


@dataclass
class CellRecord:
    """A cell in a layer's population and what the searches said about it."""

    cell: str
    fitness: float = 0.0  # accuracy effect (a fraction); until evaluated, the prior
    evaluations: int = 0
    born: int = 0
    parent: str | None = None  # the cell a mutant was made from (it starts from its weights too)


@dataclass
class Evolution:
    """Population state plus the operations of one generation; JSON round-trips exactly."""

    template: SearchSpace
    reference: Reference
    settings: EvolutionSettings
    populations: list[list[list[CellRecord]]]
    generation: int = 0
    # {"space", "reward" (mean of "rewards"), "rewards", "se", "result" (SearchResult.to_dict()), "generation"}
    elite: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    rng_state: Any = None
    elapsed_seconds: float = 0.0
    # per input resolution (str keys, as JSON has them): moving average of n * P(resolution) - 1 over the
    # searches that offered it, n the resolutions on offer; 0 = as probable as uniform, -1 = never drawn
    resolution_fitness: dict[str, float] = field(default_factory=dict)

    # ---- creation and persistence --------------------------------------------------------
    @classmethod
    def start(cls, template: SearchSpace, reference_arch: Arch, settings: EvolutionSettings) -> Evolution:
        """Generation 0: every layer's population is the reference cell (where it has one) plus random cells."""
        reference = Reference.locate(reference_arch, template)
        template = reference.include(template)
        rng = random.Random(settings.seed)
        populations = []
        for s, stage in enumerate(template.stages):
            layers = []
            for i in range(len(stage.layers)):
                cells = [reference.cells[s][i]] if i < reference.depth(s) else []
                for cell in stage.layers[i]:  # the template's own cells are good seeds too
                    if cell not in cells and len(cells) < settings.population_per_layer:
                        cells.append(cell)
                while len(cells) < settings.population_per_layer:
                    cell = random_cell(rng)
                    if cell not in cells:
                        cells.append(cell)
                layers.append([CellRecord(cell) for cell in cells])
            populations.append(layers)
        return cls(template, reference, settings, populations, rng_state=_encode_rng(rng.getstate()))

    def to_dict(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "template": self.template.to_dict(), "reference": self.reference.arch.encode(),
                "settings": asdict(self.settings),
                "populations": [[[asdict(c) for c in layer] for layer in stage] for stage in self.populations],
                "generation": self.generation, "elite": self.elite, "history": self.history,
                "rng_state": self.rng_state, "elapsed_seconds": self.elapsed_seconds,
                "resolution_fitness": self.resolution_fitness}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evolution:
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"evolution state has format {data.get('format')!r}, expected {STATE_FORMAT!r} "
                             "(a run made by an older AutoSpace cannot be resumed by this one; start a new run)")
        template = SearchSpace.from_dict(data["template"])
        return cls(template=template, reference=Reference.locate(Arch.parse(data["reference"]), template),
                   settings=EvolutionSettings(**data["settings"]),
                   populations=[[[CellRecord(**c) for c in layer] for layer in stage] for stage in data["populations"]],
                   generation=data["generation"], elite=data["elite"], history=data["history"],
                   rng_state=data["rng_state"], elapsed_seconds=data["elapsed_seconds"],
                   resolution_fitness=data.get("resolution_fitness", {}))

    def save(self, path: Path) -> None:
        """Atomic JSON write: a crash leaves the previous generation's state intact."""
        write_text_atomically(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> Evolution:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"evolution state {path} cannot be read ({err})") from None
        return cls.from_dict(data)

    # ---- one generation ----------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.generation >= self.settings.generations or self._next_generation_overruns()

    def _next_generation_overruns(self) -> bool:
        """Whether one more generation, at the mean pace so far, would end past ``wall_time_minutes``.

        A budget, not a deadline to overshoot by a generation: on a slower machine the run
        evolves fewer generations and still ends in time.
        """
        budget = self.settings.wall_time_minutes
        if budget is None or self.generation == 0:
            return False
        return self.elapsed_seconds * (self.generation + 1) / self.generation > 60 * budget

    def _rng(self) -> random.Random:
        rng = random.Random()
        rng.setstate(_decode_rng(self.rng_state))
        return rng

    def _tournament(self, records: list[CellRecord], exclude: set[str], rng: random.Random) -> CellRecord:
        pool = [r for r in records if r.cell not in exclude]
        entrants = rng.sample(pool, min(self.settings.tournament_size, len(pool)))
        return max(entrants, key=lambda r: r.fitness)

    def _cells_for(self, s: int, i: int, rng: random.Random) -> tuple[str, ...]:
        chosen: list[str] = [self.reference.cells[s][i]] if i < self.reference.depth(s) else []
        while len(chosen) < self.settings.cells_per_layer:
            chosen.append(self._tournament(self.populations[s][i], set(chosen), rng).cell)
        return tuple(chosen)

    def propose(self) -> list[SearchSpace]:
        """This generation's candidate spaces (deterministic given the saved state).

        With an elite and room for more than one space, the first is the best elite space
        itself, to be re-scored; the others are new.
        """
        rng = self._rng()
        parents = [SearchSpace.from_dict(e["space"]) for e in self.elite] or [self.template]
        max_resolution = max(self.template.resolutions)
        rescored = [parents[0]] if self.elite and self.settings.spaces_per_generation > 1 else []
        spaces = []
        for _ in range(self.settings.spaces_per_generation - len(rescored)):
            base = parents[0] if len(parents) == 1 else crossover(*rng.sample(parents, 2), rng)
            if rng.random() < 0.5:
                base = mutate_genome(base, self.reference, max_resolution, rng, self._resolution_fitness())
            stages = tuple(replace(stage, layers=tuple(self._cells_for(s, i, rng) for i in range(len(stage.layers))))
                           for s, stage in enumerate(base.stages))
            spaces.append(self.reference.include(replace(base, stages=stages, name=f"g{self.generation}")))
        return rescored + spaces

    def _resolution_fitness(self) -> dict[int, float] | None:
        """The resolutions' fitness where the searches learn it (settings), else None: the gene mutates at random."""
        if not self.settings.search_learns_resolution:
            return None
        return {int(r): value for r, value in self.resolution_fitness.items()}

    def _update_resolution_fitness(self, spaces: list[SearchSpace], results: Sequence[SearchResult | None]) -> None:
        """Fold the generation's learned P(resolution), relative to uniform, into the resolutions' fitness."""
        evidence = average_evidence([resolution_evidence(space, r) for space, r in zip(spaces, results)
                                     if r is not None])
        for r, value in evidence.items():
            self.resolution_fitness[r] = moving_average(self.resolution_fitness.get(r, 0.0), value,
                                                        self.settings.fitness_momentum,
                                                        first=r not in self.resolution_fitness)

    def cell_logits(self, space: SearchSpace) -> list[list[list[float]]]:
        """Op logits for a search of ``space`` that start from the cells' fitness (``skip``: 0)."""
        fitness = {(s, i, r.cell): r.fitness for s, stage in enumerate(self.populations)
                   for i, layer in enumerate(stage) for r in layer}

        def logit(s: int, i: int, cell: str) -> float:
            if cell == SKIP:
                return 0.0
            value = fitness.get((s, i, cell), 0.0) / EFFECT_PER_LOGIT
            return max(-MAX_PRIOR_LOGIT, min(MAX_PRIOR_LOGIT, value))

        return [[[logit(s, i, cell) for cell in stage.choices(i)] for i in range(len(stage.layers))]
                for s, stage in enumerate(space.stages)]

    def update(self, spaces: list[SearchSpace], results: Sequence[SearchResult | None],
               wall_seconds: float = 0.0) -> dict[str, Any]:
        """Fold one generation's search results in; returns (and records) the generation report."""
        if len(results) != len(spaces):
            raise ValueError(f"{len(results)} results for {len(spaces)} spaces")
        s = self.settings
        scores = [None if result is None else space_score(result, s.metric, s.target, s.reward_exponent)
                  for result in results]
        for space, result, score in zip(spaces, results, scores):
            if score is not None:
                self._add_to_elite(space, result, score)
        self.elite = sorted(self.elite, key=lambda e: -e["reward"])[:max(s.elite, 1)]
        evidence = average_evidence([cell_evidence(space, r) for space, r in zip(spaces, results) if r is not None])
        for (stage, layer, cell), value in evidence.items():
            for record in self.populations[stage][layer]:
                if record.cell == cell:
                    record.fitness = moving_average(record.fitness, value, s.fitness_momentum,
                                                    first=record.evaluations == 0)
                    record.evaluations += 1
        if s.search_learns_resolution:
            self._update_resolution_fitness(spaces, results)
        scored_fitness = [[{r.cell: r.fitness if r.evaluations else None for r in layer} for layer in stage]
                          for stage in self.populations]
        rng = self._rng()
        changes = self._replace_worst(rng)
        for change in changes:
            change["fitness"] = scored_fitness[change["stage"]][change["layer"]]
        self.rng_state = _encode_rng(rng.getstate())
        rewards = [score.reward for score in scores if score is not None]
        best = max((sc for sc in scores if sc is not None), key=lambda sc: sc.reward, default=None)
        report = {
            "generation": self.generation,
            "best_reward": best.reward if best else None,
            "best_reward_se": best.se if best else None,
            "mean_reward": sum(rewards) / len(rewards) if rewards else None,
            "failed_spaces": sum(r is None for r in results),
            "spaces": [{"cardinality": space.cardinality, "log10_cardinality": round(space.log10_cardinality, 3),
                        "madds_range": _madds_range(space),
                        "rescored": i == 0 and space.name != f"g{self.generation}",
                        "reward": score.reward if score else None, "reward_se": score.se if score else None,
                        **(result.derived() if result else dict.fromkeys(DERIVED_FIELDS))}
                       for i, (space, score, result) in enumerate(zip(spaces, scores, results))],
            "layers": changes,
            "resolution_fitness": dict(self.resolution_fitness),
            # the elite's best so far; the key predates the registry's `champion` alias and stays for old runs
            "champion": self.elite[0]["result"]["arch"] if self.elite else None,
            "champion_reward": self.elite[0]["reward"] if self.elite else None,
            "champion_reward_se": self.elite[0]["se"] if self.elite else None,
            "wall_seconds": wall_seconds,
        }
        self.history.append(report)
        self.generation += 1
        self.elapsed_seconds += wall_seconds
        return report

    def _add_to_elite(self, space: SearchSpace, result: SearchResult, score: Any) -> None:
        """A re-scored elite space averages its scores (its latest search's result stands); a new one joins."""
        data = space.to_dict()
        for entry in self.elite:
            if entry["space"] == data:
                entry["rewards"].append(score.reward)
                entry["ses"].append(score.se)
                n = len(entry["rewards"])
                entry["reward"] = sum(entry["rewards"]) / n
                entry["se"] = math.sqrt(sum(se ** 2 for se in entry["ses"])) / n
                entry["result"] = result.to_dict()
                return
        self.elite.append({"space": data, "reward": score.reward, "rewards": [score.reward], "se": score.se,
                           "ses": [score.se], "result": result.to_dict(), "generation": self.generation})

    def _replace_worst(self, rng: random.Random) -> list[dict[str, Any]]:
        """Replace each layer's lowest-fitness cells by mutants of its best (the reference cell stays)."""
        changes = []
        n_replace = int(round(self.settings.replace_fraction * self.settings.population_per_layer))
        for s, stage in enumerate(self.populations):
            for i, layer in enumerate(stage):
                protected = self.reference.cells[s][i] if i < self.reference.depth(s) else None
                ranked = sorted(layer, key=lambda r: r.fitness)
                dropped = [r for r in ranked if r.cell != protected][:n_replace]
                keep = [r for r in layer if r not in dropped]
                present = {r.cell for r in keep}
                added = []
                for _ in dropped:
                    parent = max(rng.sample(keep, min(self.settings.tournament_size, len(keep))),
                                 key=lambda r: r.fitness)
                    child = _mutant(parent.cell, present, rng)
                    present.add(child)
                    added.append(CellRecord(child, fitness=MUTANT_PRIOR_SHRINK * parent.fitness,
                                            born=self.generation + 1, parent=parent.cell))
                stage[i] = keep + added
                changes.append({"stage": s, "layer": i, "kept": [r.cell for r in keep],
                                "added": [r.cell for r in added], "parents": {r.cell: r.parent for r in added},
                                "dropped": [r.cell for r in dropped]})
        return changes

    # ---- result -----------------------------------------------------------------------------
    def learned_space(self) -> SearchSpace:
        """The top-K cells per layer (by fitness) on the best space's genome: the space AutoSpace learned.

        Where the searches learn the resolution, the genome keeps only the resolutions at least as
        fit as uniform (the fittest one always, and the reference's).
        """
        base = SearchSpace.from_dict(self.elite[0]["space"]) if self.elite else self.template
        fitness = self._resolution_fitness()
        if fitness:
            fittest = max(base.resolutions, key=lambda r: fitness.get(r, 0.0))
            base = replace(base, resolutions=tuple(r for r in base.resolutions
                                                   if r == fittest or fitness.get(r, 0.0) >= 0))
        stages = tuple(
            replace(stage, layers=tuple(
                tuple(r.cell for r in sorted(self.populations[s][i], key=lambda r: -r.fitness)
                      [:self.settings.cells_per_layer])
                for i in range(len(stage.layers))))
            for s, stage in enumerate(base.stages))
        return self.reference.include(replace(base, stages=stages, name="learned"))

    def derived_points(self, final: SearchResult) -> list[dict[str, Any]]:
        """Every architecture the run derived (each generation's spaces, then ``final``, the search in the
        learned space) as the records the Pareto front and the summary are made of."""
        points = [{**entry, "generation": h["generation"]} for h in self.history for entry in h["spaces"]
                  if entry["arch"] is not None]
        points.append({**final.derived(), "generation": self.generation, "final": True})
        return points

    def arch_reward(self, point: dict[str, Any]) -> float:
        """One derived architecture's reward (its accuracy and its cost on the budget metric), as a space's."""
        s = self.settings
        return space_reward(point["val_accuracy"], recorded_cost(point, s.metric), s.target, s.reward_exponent)

    def run(self, evaluate: Evaluator, checkpoint: Path | None = None,
            on_generation: Callable[[dict[str, Any]], None] | None = None,
            before_checkpoint: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Generations until the budget is spent; the state is saved after each one.

        Per generation: ``evaluate`` the proposed spaces (``self.generation`` is the one
        being evaluated), fold the results in, ``before_checkpoint(report)`` (work that must
        be done before the state moves on: a crash in between repeats the generation), save
        to ``checkpoint``, then ``on_generation(report)`` (logging, status).
        """
        while not self.done:
            start = time.perf_counter()
            spaces = self.propose()
            results = evaluate(spaces)
            report = self.update(spaces, results, wall_seconds=time.perf_counter() - start)
            if before_checkpoint is not None:
                before_checkpoint(report)
            if checkpoint is not None:
                self.save(checkpoint)
            if on_generation is not None:
                on_generation(report)


def _madds_range(space: SearchSpace) -> list[float]:
    """The 5th and 95th percentile MAdds of uniform members of ``space`` (seeded: the same every time)."""
    rng = random.Random(0)
    madds = sorted(arch_cost(space.sample(rng)).madds for _ in range(COST_RANGE_SAMPLES))
    return [float(madds[len(madds) // 20]), float(madds[-len(madds) // 20 - 1])]


def _mutant(cell: str, present: set[str], rng: random.Random) -> str:
    """A mutation of ``cell`` not yet in the layer (a random cell if the vocabulary can't mutate it)."""
    for _ in range(20):
        try:
            child = mutate_cell(cell, rng)
        except ValueError:
            child = random_cell(rng)
        if child not in present:
            return child
    while True:
        child = random_cell(rng)
        if child not in present:
            return child


def _encode_rng(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _decode_rng(state: list) -> tuple:
    version, internal, gauss = state
    return version, tuple(internal), gauss
