"""AutoSpace loop with an in-process evaluator: validity, fitness flow, reference, exact resume."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from evolve.cells import CellGenes, mutate_cell, random_cell
from evolve.fitness import cell_evidence, result_cost, space_reward
from evolve.genome import Reference, crossover, mutate_genome
from evolve.loop import Evolution, EvolutionSettings
from spaces.cost import arch_cost
from spaces.reference import reference_arch
from spaces.space import SearchSpace, default_space

REFERENCE = reference_arch(1, 28, 10)
SETTINGS = EvolutionSettings(generations=3, spaces_per_generation=3, population_per_layer=6, cells_per_layer=3,
                             target=4e6, seed=1)


def favour_kernel_5(spaces: list[SearchSpace]) -> list[dict[str, Any] | None]:
    """A stand-in for the supernet search: k5 cells get twice the probability of the others."""
    results = []
    for n, space in enumerate(spaces):
        cells = [[[2.0 if "_k5" in c else 1.0 for c in st.choices(i)] for i in range(len(st.layers))]
                 for st in space.stages]
        probabilities = {"cells": [[[v / sum(layer) for v in layer] for layer in st] for st in cells]}
        arch = space.sample(random.Random(n))
        cost = arch_cost(arch)
        results.append({"arch": arch.encode(), "val_accuracy": 0.5 + 0.1 * n, "madds": cost.madds,
                        "params": cost.params, "probabilities": probabilities})
    return results


def test_cells_mutate_within_the_vocabulary() -> None:
    rng = random.Random(0)
    for _ in range(200):
        cell = random_cell(rng)
        child = mutate_cell(cell, rng)
        assert child != cell and CellGenes.parse(child).cell == child
        diff = [f for f in ("kernel", "expansion", "se", "act")
                if getattr(CellGenes.parse(cell), f) != getattr(CellGenes.parse(child), f)]
        assert len(diff) == 1
    with pytest.raises(ValueError, match="outside the evolvable vocabulary"):
        CellGenes.parse("ir_k3_m40_relu")


def test_genome_operators_keep_spaces_valid_and_the_reference_inside() -> None:
    template = default_space()
    reference = Reference.locate(REFERENCE, template)
    rng = random.Random(0)
    space = template
    for _ in range(60):
        space = mutate_genome(space, reference, 28, rng)
        assert space.contains(REFERENCE)
        other = mutate_genome(template, reference, 28, rng)
        assert crossover(space, other, rng).contains(REFERENCE)


def test_reference_that_does_not_fit_is_explained() -> None:
    too_deep = REFERENCE.encode().replace("ir_r2_k3_s2_e3_c24_relu6", "ir_r4_k3_s2_e3_c24_relu6")
    from spaces.arch import Arch
    with pytest.raises(ValueError, match="stage 1: the reference has 4 blocks, the space 3 layers"):
        Reference.locate(Arch.parse(too_deep), default_space())


def test_evidence_is_normalised_to_one_for_uniform_layers() -> None:
    space = default_space()
    uniform = {"cells": [[[1 / len(st.choices(i))] * len(st.choices(i)) for i in range(len(st.layers))]
                         for st in space.stages]}
    evidence = cell_evidence(space, uniform)
    assert evidence and all(v == pytest.approx(1.0) for v in evidence.values())
    assert all(cell != "skip" for (_, _, cell) in evidence)


def test_reward_is_soft_above_target_only() -> None:
    assert space_reward(0.9, 3e6, 4e6, -0.07) == 0.9
    assert space_reward(0.9, 8e6, 4e6, -0.07) == pytest.approx(0.9 * 2 ** -0.07)


def test_latency_budget_ranks_spaces_by_the_predicted_latency_of_their_derived_arch() -> None:
    settings = EvolutionSettings(generations=1, spaces_per_generation=3, population_per_layer=6, cells_per_layer=3,
                                 elite=1, metric="latency", target=1.0, seed=1)
    evo = Evolution.start(default_space(), REFERENCE, settings)
    spaces = evo.propose()
    results = favour_kernel_5(spaces)  # accuracies 0.5, 0.6, 0.7: the most accurate is 8x over the target
    for result, ms in zip(results, (0.5, 1.0, 8.0)):
        result["predicted_latency_ms"] = ms
    report = evo.update(spaces, results)
    assert [s["reward"] for s in report["spaces"]] == pytest.approx([0.5, 0.6, 0.7 * 8.0 ** -0.07])
    with pytest.raises(ValueError, match="predicted_latency_ms"):
        result_cost({"madds": 1, "params": 1}, "latency")


def test_every_candidate_space_contains_the_reference_and_fitness_follows_evidence() -> None:
    evo = Evolution.start(default_space(), REFERENCE, SETTINGS)
    for _ in range(SETTINGS.generations):
        spaces = evo.propose()
        assert len(spaces) == SETTINGS.spaces_per_generation
        assert all(space.contains(REFERENCE) for space in spaces)
        evo.update(spaces, favour_kernel_5(spaces))
    k5 = [r.fitness for st in evo.populations for layer in st for r in layer if "_k5" in r.cell and r.evaluations]
    others = [r.fitness for st in evo.populations for layer in st for r in layer
              if "_k5" not in r.cell and r.evaluations]
    assert min(k5) > max(others)
    learned = evo.learned_space()
    assert learned.contains(REFERENCE)
    report = evo.history[-1]
    assert report["best_reward"] >= report["mean_reward"] and len(report["spaces"]) == 3
    assert all({"kept", "added", "dropped"} <= set(layer) for layer in report["layers"])
    replaced = sum(len(layer["added"]) for layer in report["layers"])
    assert replaced == round(SETTINGS.replace_fraction * SETTINGS.population_per_layer) * len(report["layers"])


def test_failed_spaces_do_not_update_fitness_or_crash() -> None:
    evo = Evolution.start(default_space(), REFERENCE, SETTINGS)
    spaces = evo.propose()
    report = evo.update(spaces, [None] * len(spaces))
    assert report["failed_spaces"] == 3 and report["best_reward"] is None
    assert all(r.evaluations == 0 for st in evo.populations for layer in st for r in layer)


def test_resume_from_saved_state_is_exact(tmp_path: Path) -> None:
    straight = Evolution.start(default_space(), REFERENCE, SETTINGS)
    straight.run(favour_kernel_5)
    path = tmp_path / "state.json"
    interrupted = Evolution.start(default_space(), REFERENCE, SETTINGS)
    interrupted.update(spaces := interrupted.propose(), favour_kernel_5(spaces))
    interrupted.save(path)
    resumed = Evolution.load(path)
    resumed.run(favour_kernel_5, checkpoint=path)
    assert resumed.generation == straight.generation == SETTINGS.generations
    drop_time = lambda d: json.dumps({**d, "elapsed_seconds": 0, "history": [  # noqa: E731
        {**h, "wall_seconds": 0} for h in d["history"]]}, sort_keys=True)
    assert drop_time(resumed.to_dict()) == drop_time(straight.to_dict())
    assert drop_time(Evolution.load(path).to_dict()) == drop_time(straight.to_dict())


def test_corrupt_state_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read"):
        Evolution.load(path)
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="expected 'autospace-evolution/1'"):
        Evolution.load(path)


def test_a_population_larger_than_the_vocabulary_is_refused_not_sampled_forever() -> None:
    from evolve.cells import EXPANSIONS, KERNELS, SE_RATIOS, VOCABULARY_SIZE, ACTIVATIONS

    assert VOCABULARY_SIZE == len({CellGenes(k, e, se, a).cell for k in KERNELS for e in EXPANSIONS
                                   for se in SE_RATIOS for a in ACTIVATIONS}) == 120
    EvolutionSettings(population_per_layer=VOCABULARY_SIZE)
    with pytest.raises(ValueError, match="population_per_layer=121 exceeds the 120 distinct cells"):
        EvolutionSettings(population_per_layer=VOCABULARY_SIZE + 1)
