"""The Ray evaluator end to end on a real local Ray: tiny spaces, tiny data, real Tune and Train; slots that live
across calls; the slots' claims of spaces without Ray."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest
import ray

from pipeline.config import Config, ConfigError, load_config
from pipeline.placement import read_placements
from pipeline.placement import Placement
from pipeline.ray_eval import (SearchSlots, SpaceEvaluation, _Batches, _next_space, _prepare_space_dir, _take_space,
                               evaluate_spaces, trial_capacity)
from pipeline.weight_pool import load_pool, merge_pools
from spaces.latency import LatencyTable
from spaces.supernet import space_latency_keys
from spaces.space import SearchSpace
from tests.spaces.tiny_space import TINY_SPACE


def tiny_config(data: Path, *overrides: str) -> Config:
    return load_config(None, [f"data.path={data}", "search.epochs=2", "search.warmup_epochs=1",
                              "search.batch_size=32", "search.finetune_epochs=0", "budget.target=2e5",
                              "ray.workers_per_trial=1", "ray.cpus_per_worker=0.45", *overrides])


def space_at(resolution: int) -> SearchSpace:
    """The tiny space at one input resolution, so each result's arch shows which space it came from."""
    return SearchSpace.from_dict({**TINY_SPACE, "name": f"tiny-{resolution}", "resolutions": [resolution]})


def wait_for_free_cpus(timeout: float = 10.0) -> float:
    """Free CPUs once every reservation is released (release is asynchronous), or at the timeout."""
    total = ray.cluster_resources()["CPU"]
    deadline = time.monotonic() + timeout
    while (free := ray.available_resources().get("CPU", 0.0)) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    return free


def local_node() -> dict[str, str]:
    """Where a worker of the session's one-node Ray runs: its node, this host."""
    return {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
            "ip": ray.util.get_node_ip_address()}


def nodes(placements: list[Placement]) -> list[list[dict[str, str]]]:
    """The placements without the workers' process ids (which a test cannot know)."""
    assert all(isinstance(w["pid"], int) for p in placements for w in p)
    return [[{k: v for k, v in w.items() if k != "pid"} for w in p] for p in placements]


def assert_searched(evaluation: SpaceEvaluation, space: SearchSpace) -> None:
    assert evaluation.ok and evaluation.error is None, evaluation.error
    result = evaluation.result
    assert result is not None
    assert space.contains(result.arch)
    assert 0.0 <= result.val_accuracy <= 1.0
    assert result.cost.madds > 0 and result.cost.params > 0
    assert len(result.history) == 2 and result.probabilities
    assert evaluation.attempts == 1 and evaluation.wall_seconds > result.wall_seconds > 0


def test_capacity_counts_workers_cpus_and_caps_the_configured_limit(ray_cluster: dict[str, float],
                                                                    tiny_dataset: Path) -> None:
    assert ray_cluster["CPU"] == 2
    assert trial_capacity(tiny_config(tiny_dataset)) == 4  # 2 CPUs // 0.45
    assert trial_capacity(tiny_config(tiny_dataset, "ray.workers_per_trial=2")) == 2
    assert trial_capacity(tiny_config(tiny_dataset, "ray.cpus_per_worker=1.0")) == 2
    assert trial_capacity(tiny_config(tiny_dataset, "ray.max_concurrent_trials=1")) == 1
    assert trial_capacity(tiny_config(tiny_dataset, "ray.max_concurrent_trials=9")) == 4
    with pytest.raises(ConfigError, match="needs ray.workers_per_trial x ray.cpus_per_worker = 3 x 1.0 = 3 CPUs"):
        trial_capacity(tiny_config(tiny_dataset, "ray.workers_per_trial=3", "ray.cpus_per_worker=1.0"))


def test_a_leftover_checkpoint_is_kept_for_its_space_and_dropped_for_another(tmp_path: Path) -> None:
    checkpoint = tmp_path / "space-0" / "search.pt"
    _prepare_space_dir(tmp_path, 0, space_at(12))
    checkpoint.write_bytes(b"epochs of space 12")
    _prepare_space_dir(tmp_path, 0, space_at(12))
    assert checkpoint.exists()
    _prepare_space_dir(tmp_path, 0, space_at(8))
    assert not checkpoint.exists()


def test_a_slot_takes_the_first_unclaimed_space_and_after_a_restart_the_one_it_left(tmp_path: Path) -> None:
    for index in range(3):
        _prepare_space_dir(tmp_path, index, space_at(8 + 2 * index))
    here = [{"node_id": "n0", "host": "h", "ip": "127.0.0.1", "pid": 1}]
    batch = {"storage": str(tmp_path), "spaces": [{}] * 3, "attempts_before": [0, 0, 0]}
    assert [_take_space(batch, 0, 2, here), _take_space(batch, 1, 2, here)] == [0, 1]
    assert json.loads((tmp_path / "space-1" / "claim").read_text())["slot"] == 1
    assert not list(tmp_path.glob("space-*/.claim-*"))  # a claim is written aside, then linked in place
    (tmp_path / "space-1" / "outcome.json").write_text("{}")  # slot 1 finished space 1
    assert _take_space(batch, 0, 2, here) == 0  # slot 0 restarted: it takes up its unfinished space, attempt 2
    (tmp_path / "space-0" / "errors").write_text("RuntimeError: first\nRuntimeError: second\n")
    assert _take_space(batch, 0, 2, here) == 2  # space 0 used its 2 attempts: failed with its last error; next
    outcome = json.loads((tmp_path / "space-0" / "outcome.json").read_text())
    assert outcome["result"] is None and outcome["error"] == "RuntimeError: second" and not outcome["input_error"]
    assert _take_space(batch, 1, 2, here) is None  # every space claimed
    assert [len(read_placements(tmp_path / f"space-{i}")) for i in range(3)] == [2, 1, 1]
    _prepare_space_dir(tmp_path, 0, space_at(8))  # a new call searches every space again
    assert not (tmp_path / "space-0" / "claim").exists() and not (tmp_path / "space-0" / "outcome.json").exists()


def test_one_slot_searches_every_space_in_one_process(ray_cluster: dict[str, float], tiny_dataset: Path,
                                                             tmp_path: Path) -> None:
    spaces = [space_at(12), space_at(8), space_at(10)]
    config = tiny_config(tiny_dataset, "ray.max_concurrent_trials=1")
    evaluations = evaluate_spaces(spaces, config, tiny_dataset, tmp_path, "one-slot")
    for evaluation, space in zip(evaluations, spaces):
        assert_searched(evaluation, space)
    assert len({w["pid"] for e in evaluations for p in e.placements for w in p}) == 1  # one process searched all
    assert not (tmp_path / "train").exists()  # one worker: the trial searches itself, no Train job
    assert wait_for_free_cpus() == ray_cluster["CPU"]


def test_two_spaces_are_searched_concurrently_and_come_back_in_order(ray_cluster: dict[str, float],
                                                                     tiny_dataset: Path, tmp_path: Path) -> None:
    spaces = [space_at(12), space_at(8)]
    evaluations = evaluate_spaces(spaces, tiny_config(tiny_dataset), tiny_dataset, tmp_path / "gen-0", "gen-0")
    assert [e.index for e in evaluations] == [0, 1]
    for evaluation, space in zip(evaluations, spaces):
        assert_searched(evaluation, space)
    assert [e.result.arch.input_size for e in evaluations] == [12, 8]
    assert [nodes(e.placements) for e in evaluations] == [[[local_node()]]] * 2  # one attempt, one worker, here
    assert (tmp_path / "gen-0" / "space-1" / "search.pt").exists()
    assert (tmp_path / "gen-0" / "gen-0").is_dir()  # Tune's experiment under storage, not ~/ray_results
    copy = SpaceEvaluation.from_dict(json.loads(json.dumps(evaluations[0].to_dict())))
    assert copy == evaluations[0]
    assert wait_for_free_cpus() == ray_cluster["CPU"]
    # the next generation starts from what these searches learned: their merged weights and logit priors
    assert all(e.result.cell_effects.samples > 0 and e.result.warm_started == 0 for e in evaluations)
    pool = tmp_path / "gen-0" / "pool.pt"
    merge_pools(None, [(tmp_path / "gen-0" / f"space-{i}" / "cells.pt", 0.5) for i in range(2)], pool)
    logits = [[[0.5] * len(layer) for layer in stage] for stage in evaluations[0].result.probabilities["cells"]]
    [again] = evaluate_spaces([space_at(12)], tiny_config(tiny_dataset), tiny_dataset, tmp_path / "gen-1", "gen-1",
                              pool=pool, cell_logits=[logits])
    assert again.ok and again.result.warm_started == len(load_pool(pool))


def test_slots_live_across_calls_one_process_searches_every_generation(
        ray_cluster: dict[str, float], tiny_dataset: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_dataset, "ray.max_concurrent_trials=1")
    with SearchSlots(config, tiny_dataset, tmp_path / "slots", "searches", width=2, total=3) as slots:
        slots.start()  # before any space is handed out, as a run does before its own set-up
        held = ray_cluster["CPU"] - 0.45
        deadline = time.monotonic() + 60
        while ray.available_resources().get("CPU", 0.0) != pytest.approx(held) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ray.available_resources().get("CPU", 0.0) == pytest.approx(held)  # the slot's trial started first
        first = slots.evaluate([space_at(12), space_at(8)], tmp_path / "gen-0")
        assert ray.available_resources().get("CPU", 0.0) == pytest.approx(held)  # idle, held
        [second] = slots.evaluate([space_at(10)], tmp_path / "gen-1")
    for evaluation, space in zip(first + [second], [space_at(12), space_at(8), space_at(10)]):
        assert_searched(evaluation, space)
    assert len({w["pid"] for e in first + [second] for p in e.placements for w in p}) == 1  # one process
    assert slots.starts == 1 and len(list((tmp_path / "slots" / "searches").glob("*/result.json"))) == 1  # 1 trial
    assert wait_for_free_cpus() == ray_cluster["CPU"]  # closed: the worker group is gone


def test_idle_slots_beyond_the_clusters_capacity_are_asked_to_end(ray_cluster: dict[str, float],
                                                                  tiny_dataset: Path, tmp_path: Path) -> None:
    slots = SearchSlots(tiny_config(tiny_dataset, "ray.cpus_per_worker=1.0"), tiny_dataset, tmp_path, "s", 4, 4)
    slots.control, slots.slots = tmp_path / "control", 4  # as if 4 slots had started, and nodes were lost since
    (slots.control / "batches").mkdir(parents=True)
    slots._retire_beyond_capacity(ended={0: None}, busy={3, None})
    # slot 0 ended, 3 searches: 3 slots left, one more than 2 CPUs hold; the last idle one is asked to end
    assert sorted(p.name for p in slots.control.glob("retire-*")) == ["retire-2"]
    slots._retire_beyond_capacity(ended={0: None}, busy={3})
    assert sorted(p.name for p in slots.control.glob("retire-*")) == ["retire-2"]  # a retiring slot is not counted
    here = [{"node_id": "n0", "host": "h", "ip": "127.0.0.1", "pid": 1}]
    assert _next_space(_Batches(slots.control), {"slot": 2, "max_attempts": 1}, here) is None  # ends, not waits


def test_two_workers_search_one_space_data_parallel_under_a_latency_budget(
        ray_cluster: dict[str, float], tiny_dataset: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_dataset, "ray.workers_per_trial=2", "budget.metric=latency", "budget.target=0.05",
                         "budget.latency_runtime=torch", "search.cost_loss=hinge")
    table_path = tmp_path / "latency_table.torch.json"
    with pytest.raises(ValueError, match="latency_table"):
        evaluate_spaces([space_at(12)], config, tiny_dataset, tmp_path, "two-workers")
    [evaluation] = evaluate_spaces([space_at(12)], config, tiny_dataset, tmp_path, "two-workers", table_path)
    assert_searched(evaluation, space_at(12))
    assert nodes(evaluation.placements) == [[local_node(), local_node()]]  # both ranks' places, gathered by rank 0
    # the table was measured before the trial, for every member of the space, and priced the search
    table = LatencyTable.load(table_path, runtime="torch", batch=1)
    assert set(space_latency_keys(space_at(12))) <= set(table.entries)
    result = evaluation.result
    assert result.predicted_latency_ms == pytest.approx(table.predict(result.arch))
    assert all(h["expected_latency_ms"] > 0 for h in result.history)
    assert wait_for_free_cpus() == ray_cluster["CPU"]


@pytest.fixture(scope="module", params=[1, pytest.param(2, marks=pytest.mark.slow)], ids=["in-trial", "train"])
def faulty_run(request: pytest.FixtureRequest, ray_cluster: dict[str, float], tiny_dataset: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[SpaceEvaluation], Path, int]]:
    """One run for the fault tests: space 0 fails once then resumes, space 1 fails every attempt,
    space 2 finds a tampered checkpoint; by a one-worker slot (Tune retries it) and by a 2-worker
    Train slot (Ray Train retries it)."""
    workers = request.param
    storage = tmp_path_factory.mktemp("faulty")
    (storage / "space-2").mkdir()
    (storage / "space-2" / "search.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AUTOSPACE_FAULT_SPACE", "0")
        env.setenv("AUTOSPACE_FAULT_SPACE_ALWAYS", "1")
        config = tiny_config(tiny_dataset, "ray.max_failures=1", f"ray.workers_per_trial={workers}")
        yield evaluate_spaces([space_at(12), space_at(8), space_at(10)], config, tiny_dataset, storage,
                              "faulty"), storage, workers


def test_a_failed_worker_is_retried_and_the_trial_succeeds(
        faulty_run: tuple[list[SpaceEvaluation], Path, int]) -> None:
    evaluations, storage, workers = faulty_run
    retried = evaluations[0]
    assert (storage / "space-0" / "fault-injected").exists()
    assert retried.ok and retried.attempts == 2, retried.error
    assert nodes(retried.placements) == [[local_node()] * workers] * 2  # each attempt says where it ran
    first, second = (p[0]["pid"] for p in retried.placements)
    assert first != second  # the retry is a new process: Tune restarted the trial, or Train the worker group
    assert space_at(12).contains(retried.result.arch)


def test_a_trial_that_keeps_failing_is_reported_not_raised(
        ray_cluster: dict[str, float], faulty_run: tuple[list[SpaceEvaluation], Path, int]) -> None:
    evaluations, _, _ = faulty_run
    failed = evaluations[1]
    assert [e.index for e in evaluations] == [0, 1, 2]
    assert not failed.ok and failed.result is None and not failed.input_error
    assert "RuntimeError: injected fault (always)" in failed.error
    assert failed.attempts == 2  # the first try and max_failures=1 retry
    assert wait_for_free_cpus() == ray_cluster["CPU"]


def test_a_tampered_checkpoint_fails_at_once_as_an_input_error(
        ray_cluster: dict[str, float], faulty_run: tuple[list[SpaceEvaluation], Path, int]) -> None:
    evaluations, storage, _ = faulty_run
    tampered = evaluations[2]
    assert not tampered.ok and tampered.result is None and tampered.input_error
    assert tampered.attempts == 1  # max_failures=1, but a deterministic error is not retried
    assert tampered.error.startswith(f"CheckpointError: search checkpoint {storage / 'space-2' / 'search.pt'} "
                                     "cannot be read")
    assert "delete it" in tampered.error
    assert wait_for_free_cpus() == ray_cluster["CPU"]
