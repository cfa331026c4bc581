"""AutoSpace loop with an in-process evaluator: validity, fitness flow, reference, exact resume."""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from evolve.cells import CellGenes, mutate_cell, random_cell
from evolve.fitness import MUTANT_PRIOR_SHRINK, cell_evidence, space_reward, space_score
from evolve.genome import Reference, crossover, mutate_genome
from evolve.loop import EFFECT_PER_LOGIT, MAX_PRIOR_LOGIT, Evolution, EvolutionSettings
from spaces.cost import Cost, arch_cost
from spaces.derive import Candidate
from spaces.evidence import CellEffects
from spaces.reference import reference_arch
from spaces.search import SearchResult
from spaces.space import SearchSpace, default_space

REFERENCE = reference_arch(1, 28, 10)
SETTINGS = EvolutionSettings(generations=3, spaces_per_generation=3, population_per_layer=6, cells_per_layer=3,
                             target=4e6, seed=1)


def favour_kernel_5(spaces: list[SearchSpace]) -> list[SearchResult | None]:
    """A stand-in for the supernet search: k5 cells are worth 2 accuracy points more than the others."""
    results = []
    for n, space in enumerate(spaces):
        raw = [[[0.02 if "_k5" in c else 0.0 for c in st.choices(i)] for i in range(len(st.layers))]
               for st in space.stages]
        effects = [[[v - sum(layer) / len(layer) for v in layer] for layer in st] for st in raw]
        arch = space.sample(random.Random(n))
        cost = arch_cost(arch)
        results.append(SearchResult(arch, cost, 0.5 + 0.1 * n, val_images=1000,
                                    candidates=[Candidate(None, arch.encode(), cost.madds, 0.5 + 0.1 * n)],
                                    cell_effects=CellEffects(effects, 8, 8)))
    return results


def ranked(result: SearchResult, **changes: float) -> SearchResult:
    """``result`` with its one ranked candidate changed."""
    return replace(result, candidates=[replace(result.candidates[0], **changes)])


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


def test_a_resolution_gene_with_fitness_drops_the_least_fit_and_adds_next_to_the_fittest() -> None:
    reference = Reference.locate(REFERENCE, default_space())  # 28 px: never dropped
    seen = set()
    for seed in range(200):
        rng = random.Random(seed)
        four = replace(default_space(), resolutions=(16, 20, 24, 28))
        fitness = {16: -0.9, 20: 0.5, 24: -0.2, 28: -0.3}  # both neighbours of 20 present: only a drop is left
        seen.add(mutate_genome(four, reference, 28, rng, fitness).resolutions)
        two = replace(default_space(), resolutions=(20, 28))
        seen.add(mutate_genome(two, reference, 28, rng, {20: 0.6, 28: -0.6}).resolutions)  # 20 is fit: it stays
    assert seen == {(16, 20, 24, 28), (20, 24, 28), (20, 28), (16, 20, 28)}  # unchanged, dropped 16, added 24 or 16


def test_reference_that_does_not_fit_is_explained() -> None:
    too_deep = REFERENCE.encode().replace("ir_r2_k3_s2_e3_c24_relu6", "ir_r4_k3_s2_e3_c24_relu6")
    from spaces.arch import Arch
    with pytest.raises(ValueError, match="stage 1: the reference has 4 blocks, the space 3 layers"):
        Reference.locate(Arch.parse(too_deep), default_space())


def test_evidence_is_the_accuracy_effect_of_each_drawn_cell() -> None:
    space = default_space()
    effects = [[[0.01 * k if k else None for k in range(len(st.choices(i)))] for i in range(len(st.layers))]
               for st in space.stages]
    result = SearchResult(REFERENCE, Cost(), 0.5, cell_effects=CellEffects(effects, 8, 8))
    evidence = cell_evidence(space, result)
    assert evidence and all(cell != "skip" for (_, _, cell) in evidence)
    for (s, i, cell), value in evidence.items():
        assert value == pytest.approx(0.01 * space.stages[s].choices(i).index(cell))
    assert not any(space.stages[s].choices(i).index(cell) == 0 for s, i, cell in evidence)  # never drawn: no evidence
    with pytest.raises(ValueError, match="evidence_samples > 0"):
        cell_evidence(space, replace(result, cell_effects=None))


def test_space_score_averages_the_ranked_candidates_with_their_standard_error() -> None:
    result = SearchResult(REFERENCE, Cost(10 ** 6, 1), 0.9, val_images=1000,
                          candidates=[Candidate(None, "a", 1e6, 0.80), Candidate(None, "b", 2e6, 0.84),
                                      Candidate(None, "c", 1e6, None)])
    score = space_score(result, "madds", 1e6, -0.07)
    rewards = [0.80, 0.84 * 2 ** -0.07]
    mean = sum(rewards) / 2
    spread = sum((r - mean) ** 2 for r in rewards) / 1
    assert score.reward == pytest.approx(mean) and score.architectures == 2
    assert score.se == pytest.approx((spread / 2 + 0.82 * 0.18 / 1000) ** 0.5)
    alone = space_score(replace(result, candidates=[]), "madds", 1e6, -0.07)  # nothing ranked: the derived arch
    assert alone.reward == 0.9 and alone.se == pytest.approx((0.9 * 0.1 / 1000) ** 0.5)


def test_reward_is_soft_above_target_only() -> None:
    assert space_reward(0.9, 3e6, 4e6, -0.07) == 0.9
    assert space_reward(0.9, 8e6, 4e6, -0.07) == pytest.approx(0.9 * 2 ** -0.07)


def test_latency_budget_ranks_spaces_by_the_predicted_latency_of_their_derived_arch() -> None:
    settings = EvolutionSettings(generations=1, spaces_per_generation=3, population_per_layer=6, cells_per_layer=3,
                                 elite=1, metric="latency", target=1.0, seed=1)
    evo = Evolution.start(default_space(), REFERENCE, settings)
    spaces = evo.propose()
    # accuracies 0.5, 0.6, 0.7: the most accurate is 8x over the target; nothing ranked, so each is scored by
    # its derived arch alone, on its predicted latency
    results = [replace(result, predicted_latency_ms=ms, candidates=[])
               for result, ms in zip(favour_kernel_5(spaces), (0.5, 1.0, 8.0))]
    report = evo.update(spaces, results)
    assert [s["reward"] for s in report["spaces"]] == pytest.approx([0.5, 0.6, 0.7 * 8.0 ** -0.07])
    with pytest.raises(ValueError, match="predicted_latency_ms"):
        evo.update(evo.propose(), [replace(results[0], predicted_latency_ms=None)] * 3)


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
    assert all({"kept", "added", "dropped", "fitness"} <= set(layer) for layer in report["layers"])
    assert all(set(layer["fitness"]) == set(layer["kept"]) | set(layer["dropped"]) for layer in report["layers"])
    replaced = sum(len(layer["added"]) for layer in report["layers"])
    assert replaced == round(SETTINGS.replace_fraction * SETTINGS.population_per_layer) * len(report["layers"])
    assert all(lo < hi for lo, hi in (s["madds_range"] for s in report["spaces"]))


def test_the_elite_is_proposed_again_and_rescored_by_the_mean_of_its_scores() -> None:
    evo = Evolution.start(default_space(), REFERENCE, SETTINGS)
    first = evo.propose()
    results = [ranked(r, cost=1.0) for r in favour_kernel_5(first)]  # within the budget: rewards are the accuracies
    evo.update(first, results)  # the third space scores best (0.7)
    best = first[2].to_dict()
    assert evo.elite[0]["space"] == best and evo.elite[0]["reward"] == pytest.approx(0.7)
    second = evo.propose()
    assert second[0].to_dict() == best and len(second) == SETTINGS.spaces_per_generation
    # the elite scores 0.6 this time, the new ones too
    results = [ranked(r, accuracy=0.6, cost=1.0) for r in favour_kernel_5(second)]
    report = evo.update(second, results)
    assert report["spaces"][0]["rescored"] and not report["spaces"][1]["rescored"]
    assert evo.elite[0]["space"] == best and evo.elite[0]["rewards"] == pytest.approx([0.7, 0.6])
    assert evo.elite[0]["reward"] == pytest.approx(0.65) and report["champion_reward"] == pytest.approx(0.65)


def test_mutants_start_from_a_prior_shrunk_from_their_parent_and_logits_follow_fitness() -> None:
    evo = Evolution.start(default_space(), REFERENCE, SETTINGS)
    spaces = evo.propose()
    evo.update(spaces, favour_kernel_5(spaces))
    mutants = [r for st in evo.populations for layer in st for r in layer if r.born == 1]
    assert mutants and all(r.evaluations == 0 for r in mutants)
    parents_fitness = {r.fitness for st in evo.populations for layer in st for r in layer if r.evaluations}
    assert all(any(r.fitness == pytest.approx(MUTANT_PRIOR_SHRINK * f) for f in parents_fitness | {0.0})
               for r in mutants)
    space = evo.propose()[1]
    fitness = {(s, i, r.cell): r.fitness for s, st in enumerate(evo.populations) for i, layer in enumerate(st)
               for r in layer}
    for s, (stage, layers) in enumerate(zip(space.stages, evo.cell_logits(space))):
        for i, logits in enumerate(layers):
            for cell, logit in zip(stage.choices(i), logits):
                expected = 0.0 if cell == "skip" else fitness.get((s, i, cell), 0.0) / EFFECT_PER_LOGIT
                assert logit == pytest.approx(max(-MAX_PRIOR_LOGIT, min(MAX_PRIOR_LOGIT, expected)))


def learn_24_px(spaces: list[SearchSpace]) -> list[SearchResult | None]:
    """``favour_kernel_5``'s results, with searches that learned to prefer 24 px (P 0.7 where offered)."""
    def learned(space: SearchSpace) -> list[float]:
        n = len(space.resolutions)
        if 24 not in space.resolutions:
            return [1 / n] * n
        return [0.7 if r == 24 else 0.3 / (n - 1) for r in space.resolutions]
    return [replace(result, probabilities={"resolution": learned(space)})
            for space, result in zip(spaces, favour_kernel_5(spaces))]


@pytest.mark.parametrize("learns", [True, False])
def test_the_resolutions_fitness_is_what_the_searches_learned_and_prunes_the_learned_space(learns: bool) -> None:
    settings = replace(SETTINGS, search_learns_resolution=learns)
    evo = Evolution.start(default_space(), REFERENCE, settings)  # 20, 24, 28 px; the reference at 28
    evo.run(learn_24_px)
    assert Evolution.from_dict(json.loads(json.dumps(evo.to_dict()))).to_dict() == evo.to_dict()
    if not learns:  # straight-through gates: P(resolution) is the cost term's, not evidence
        assert evo.resolution_fitness == {} and evo.history[-1]["resolution_fitness"] == {}
        assert evo.learned_space().resolutions == SearchSpace.from_dict(evo.elite[0]["space"]).resolutions
        return
    fitness = evo.resolution_fitness
    assert fitness["24"] == pytest.approx(3 * 0.7 - 1) and all(v < 0 for r, v in fitness.items() if r != "24")
    assert evo.history[-1]["resolution_fitness"] == fitness
    assert evo.learned_space().resolutions == (24, 28)  # 20 px goes; 28 px is the reference's


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


def test_the_wall_time_budget_stops_before_a_generation_that_would_not_fit() -> None:
    timed = dataclasses.replace(SETTINGS, generations=10, wall_time_minutes=10)
    evo = Evolution.start(default_space(), REFERENCE, timed)
    assert not evo.done  # nothing measured yet: the first generation always runs
    evo.update(spaces := evo.propose(), favour_kernel_5(spaces), wall_seconds=240)
    assert not evo.done  # 4 min done, a second at that pace ends at 8 <= 10
    evo.update(spaces := evo.propose(), favour_kernel_5(spaces), wall_seconds=240)
    assert evo.done and evo.generation == 2  # a third would end at 12 > 10 minutes


def test_corrupt_state_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read"):
        Evolution.load(path)
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="expected 'autospace-evolution/2'.*older AutoSpace"):
        Evolution.load(path)


def test_a_population_larger_than_the_vocabulary_is_refused_not_sampled_forever() -> None:
    from evolve.cells import EXPANSIONS, KERNELS, SE_RATIOS, VOCABULARY_SIZE, ACTIVATIONS

    assert VOCABULARY_SIZE == len({CellGenes(k, e, se, a).cell for k in KERNELS for e in EXPANSIONS
                                   for se in SE_RATIOS for a in ACTIVATIONS}) == 120
    EvolutionSettings(population_per_layer=VOCABULARY_SIZE)
    with pytest.raises(ValueError, match="population_per_layer=121 exceeds the 120 distinct cells"):
        EvolutionSettings(population_per_layer=VOCABULARY_SIZE + 1)


def test_run_calls_its_hooks_in_order_and_the_state_is_saved_between_them(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    evo = Evolution.start(default_space(), REFERENCE, SETTINGS)
    calls: list[tuple[str, int, int]] = []

    def saved_generation() -> int:
        return Evolution.load(path).generation if path.exists() else 0

    def evaluate(spaces: list[SearchSpace]) -> list[SearchResult | None]:
        calls.append(("evaluate", evo.generation, saved_generation()))
        return favour_kernel_5(spaces)

    evo.run(evaluate, checkpoint=path,
            before_checkpoint=lambda report: calls.append(("before", report["generation"], saved_generation())),
            on_generation=lambda report: calls.append(("after", report["generation"], saved_generation())))
    # evaluate sees the generation being evaluated; before_checkpoint runs while the file still holds the previous
    # state; on_generation once this generation is saved
    assert calls == [step for n in range(SETTINGS.generations)
                     for step in (("evaluate", n, n), ("before", n, n), ("after", n, n + 1))]


def test_derived_points_end_with_the_final_search_and_the_best_is_chosen_by_its_reward() -> None:
    settings = replace(SETTINGS, generations=1, target=1e6)
    evo = Evolution.start(default_space(), REFERENCE, settings)
    evo.run(favour_kernel_5)
    final = replace(favour_kernel_5(evo.propose())[0], val_accuracy=0.99, cost=Cost(4 * 10 ** 6, 1))
    points = evo.derived_points(final)
    assert [p.get("final", False) for p in points] == [False] * settings.spaces_per_generation + [True]
    assert points[-1] == {**final.derived(), "generation": 1, "final": True}
    assert evo.arch_reward(points[-1]) == pytest.approx(0.99 * 4 ** -0.07)  # over the target: softly penalised
    assert all(evo.arch_reward(p) == space_reward(p["val_accuracy"], p["madds"], 1e6, -0.07) for p in points)
