"""Score a generation's candidate spaces on Ray: Tune trials as slots, each a Train worker group reused across spaces.

A generation's spaces are searched by ``min(trial_capacity, len(spaces))``
concurrent Ray Tune trials, the *slots*. Each slot's trial function runs one
Ray Train ``TorchTrainer`` whose ``ray.workers_per_trial`` gloo workers search
(:func:`spaces.search.search`, data-parallel) one space after another until
none is left: rank 0 claims the next unclaimed space by creating
``<storage>/space-<i>/claim`` (exclusive create, so two slots never take the
same space, on any node that sees the storage) and broadcasts its index. A
worker group's start (worker processes, torch, gloo; ~10-14 s on 2 cores) and a
Tune trial's (~3 s) are paid once per slot instead of once per space, and the
data set is loaded once per worker group. Searches of unequal length balance
themselves: a slot that finishes early takes the next space.

Results. Rank 0 writes each space's outcome to ``<storage>/space-<i>/outcome.json``
(the search result, or the error), and :func:`evaluate_spaces` reads them back
after ``Tuner.fit``: one :class:`SpaceEvaluation` per input space, in input
order. Under Train V2 a metrics-only ``ray.train.report`` is a collective every
rank would have to join, and a files-in-storage record survives a lost worker
group. A call clears the claims and outcomes an earlier call left, so every
space is searched again, from its checkpoint.

Retries happen in one layer only, Ray Train's: a failed worker group is
restarted inside the same trial (no new trial actor or controller) and takes up
the space it had claimed, from its checkpoint ``space-<i>/search.pt``. Each space
gets ``1 + ray.max_failures`` attempts (worker-group starts on it; rank 0 logs
each to ``space-<i>/attempts``): a group that restarts on a space that used them
all records it as failed, with the last error a worker logged in
``space-<i>/errors``, and goes on with the next space. Train's own budget is
sized so that every space can use its attempts. Tune's retries are off; a slot
whose trial still fails leaves its claimed space failed with that error, and
:func:`evaluate_spaces` never raises for a search's failure.

Where work ran. Each worker-group start first gathers every rank's Ray node (id,
hostname, node IP; one all-gather) and rank 0 appends it to
``space-<i>/placements.jsonl`` of every space it starts or takes up; the
evaluation's ``placements`` are its attempts' lines (:mod:`pipeline.placement`).
Trial functions are pinned to the head node (:data:`~pipeline.cluster.ON_HEAD`),
and with them the Train controllers (Ray puts a controller on its caller's
node): a lost worker node then takes only Train workers with it, which the
controller restarts on the nodes left.

Deterministic errors are not retried. A :class:`~spaces.errors.UserError` (a
tampered or foreign checkpoint, a config the search rejects) would fail the same
way on every attempt, so the workers catch it and record it as the space's
outcome (``input_error=True``) after one attempt; every rank reads the
checkpoint, data and config before the first collective, so all ranks stop
together. A user error before any space (the data set cannot be read) ends the
slot and marks every space left as failed on the user's input.

Resources. Each Train worker reserves ``ray.cpus_per_worker`` CPUs. The trial
function only waits on ``fit()``, so it reserves a little memory and no CPU (Tune
rejects an empty request): trials then never hold CPUs their own workers need,
and ``cluster CPUs // (workers_per_trial * cpus_per_worker)`` slots run at once.
No early stopping: Tune stopping a Train-in-Tune trial leaks its workers' CPUs
(see STACK-NOTES), so every trial runs to its end.

Fault injection (tests, drills), read on the driver and passed to the workers
through ``train_loop_config``:

- ``AUTOSPACE_FAULT_SPACE=<i>``: space ``i``'s search raises on rank 0
  ``RuntimeError("injected fault")`` unless ``space-<i>/fault-injected`` exists;
  it creates that marker first, so the retry succeeds.
- ``AUTOSPACE_FAULT_SPACE_ALWAYS=<i>``: space ``i``'s search raises on rank 0
  ``RuntimeError("injected fault (always)")`` on every attempt.

``storage`` is one directory per generation, visible to every node. Calling again
with the same storage resumes each search from its checkpoint (a crashed driver
or evolution actor loses no finished epochs); a checkpoint left there by a
different space is discarded, since it cannot be resumed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
import torch
import torch.distributed as dist
from ray import train, tune

from pipeline.cluster import ON_HEAD, ensure_ray, fail_once, torch_trainer, worker_groups_that_fit
from pipeline.config import Config
from pipeline.latency_table import load_table, measure_spaces
from pipeline.placement import PLACEMENTS, Placement, read_placements
from pipeline.run_dir import write_json
from pipeline.search_job import load_search_data, search_settings
from pipeline.weight_pool import SEARCH_WEIGHTS_FILE, load_pool
from spaces.errors import UserError
from spaces.search import SearchData, SearchResult, WarmStart, search
from spaces.space import SearchSpace

__all__ = ["SpaceEvaluation", "evaluate_spaces", "trial_capacity"]

logger = logging.getLogger(__name__)

FAULT_ONCE_ENV = "AUTOSPACE_FAULT_SPACE"
FAULT_ALWAYS_ENV = "AUTOSPACE_FAULT_SPACE_ALWAYS"
# What a trial function reserves instead of CPU (it only blocks on fit()), on the head node (module docstring).
TRIAL_RESOURCES = {"cpu": 0, "memory": 64 * 2**20, "custom_resources": ON_HEAD}
INPUT_ERROR_KEY = "input_error"  # the key of a slot's returned user error
CLAIM, OUTCOME, ERRORS, ATTEMPTS = "claim", "outcome.json", "errors", "attempts"  # files in each space-<i>


@dataclass
class SpaceEvaluation:
    """The outcome of one candidate space's search, JSON-friendly."""

    index: int
    ok: bool
    result: SearchResult | None  # None unless ok
    error: str | None
    wall_seconds: float  # from the space's claim to its outcome: its search, retries and restarts included
    attempts: int
    input_error: bool = False  # the error is the user's input (UserError): it was not retried
    # where each attempt's Train workers ran, oldest first (the last produced the result): pipeline.placement
    placements: list[Placement] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A ``results.json`` entry."""
        return {**asdict(replace(self, result=None)), "result": self.result.to_dict() if self.result else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpaceEvaluation:
        result = data.get("result")
        return cls(**{**data, "result": SearchResult.from_dict(result) if result is not None else None})


def trial_capacity(config: Config) -> int:
    """How many slots (trials) run at once: the configured limit, capped by the cluster's CPUs.

    Raises:
        ConfigError: one trial's workers need more CPUs than the whole cluster has
            (they would wait for a placement group forever).
    """
    fitting = worker_groups_that_fit("one trial", config.ray.workers_per_trial, config.ray.cpus_per_worker,
                                     "ray.workers_per_trial")
    limit = config.ray.max_concurrent_trials
    return fitting if limit is None else min(limit, fitting)


def evaluate_spaces(spaces: list[SearchSpace], config: Config, data_path: Path, storage: Path,
                    name: str, latency_table: Path | None = None, pool: Path | None = None,
                    cell_logits: list[list[list[list[float]]]] | None = None) -> list[SpaceEvaluation]:
    """Search every space in concurrent slots (module docstring); one evaluation per space, in input order.

    Args:
        spaces: candidate spaces, already adapted to the data set.
        config: the pipeline config (search, budget, data limits, ray sections).
        data_path: the Parquet data set; every worker group loads it itself.
        storage: this generation's directory for Tune/Train outputs and search checkpoints.
        name: the Tune experiment's name (Train runs are ``<name>-slot-<k>``).
        latency_table: the run's latency table file, needed under a latency budget: every
            entry the spaces can need is measured into it here, before any trial starts,
            and every search prices latency from it (visible to every node, like ``storage``).
        pool: a weight pool (:mod:`pipeline.weight_pool`) every search starts from, where it
            offers the pool's cells; each search leaves its own trained weights in
            ``<storage>/space-<i>/cells.pt``.
        cell_logits: per space, the op logits its search starts from (fitness priors).
    """
    search_settings(config)  # a config the search rejects fails here, not in every worker
    if not spaces:
        return []
    if config.budget.metric == "latency":
        if latency_table is None:
            raise ValueError("budget.metric=latency: evaluate_spaces needs the run's latency_table path")
        _, added = measure_spaces(latency_table, config, spaces)
        logger.info("latency table %s: %d entries measured for this generation", latency_table, added)
    else:
        latency_table = None
    ensure_ray(config)
    storage = Path(storage).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    for index, space in enumerate(spaces):
        _prepare_space_dir(storage, index, space)
    attempts_before = [_attempts(storage, i) for i in range(len(spaces))]
    placed_before = [len(read_placements(_space_dir(storage, i))) for i in range(len(spaces))]
    trainable = tune.with_parameters(
        _run_slot, spaces=[s.to_dict() for s in spaces], config=config.model_dump(mode="json"),
        data_path=str(Path(data_path).resolve()), storage=str(storage), name=name,
        latency_table=str(Path(latency_table).resolve()) if latency_table is not None else None,
        pool=str(Path(pool).resolve()) if pool is not None else None, cell_logits=cell_logits,
        attempts_before=attempts_before,
        faults={key: os.environ.get(key) for key in (FAULT_ONCE_ENV, FAULT_ALWAYS_ENV)})
    slots = min(trial_capacity(config), len(spaces))
    logger.info("evaluating %d spaces in %d slots under %s", len(spaces), slots, storage / name)
    tuner = tune.Tuner(
        tune.with_resources(trainable, TRIAL_RESOURCES),
        param_space={"slot": tune.grid_search(list(range(slots)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=slots),
        run_config=tune.RunConfig(storage_path=str(storage), name=name, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)))
    failures = {int(trial.config["slot"]): _slot_failure(trial) for trial in tuner.fit()}
    return [_evaluation(storage, i, attempts_before[i], placed_before[i], failures) for i in range(len(spaces))]


def _slot_failure(trial: tune.Result) -> tuple[str, bool] | None:
    """Why a slot ended without searching every space it claimed (error, is it the user's input), or None."""
    metrics = trial.metrics or {}
    if trial.error is not None or "failure" not in metrics:
        return (str(trial.error) if trial.error is not None else "the slot's trial reported nothing"), False
    return (metrics["failure"], bool(metrics["input_error"])) if metrics["failure"] else None


def _evaluation(storage: Path, index: int, attempts_before: int, placed_before: int,
                failures: dict[int, tuple[str, bool] | None]) -> SpaceEvaluation:
    """Space ``index``'s evaluation from its outcome file or, without one, from its slot's failure."""
    space_dir = _space_dir(storage, index)
    attempts = _attempts(storage, index) - attempts_before
    placements = read_placements(space_dir)[placed_before:]
    outcome = _read_json(space_dir / OUTCOME)
    if outcome is not None:
        result = SearchResult.from_dict(outcome["result"]) if outcome["result"] is not None else None
        return SpaceEvaluation(index, result is not None, result, outcome["error"], outcome["wall_seconds"],
                               attempts, outcome["input_error"], placements)
    claim = _read_json(space_dir / CLAIM)
    if claim is None:  # every slot ended before reaching it
        known = [f for f in failures.values() if f is not None]
        error, input_error = known[0] if known else ("no slot took this space", False)
        return SpaceEvaluation(index, False, None, f"not searched: {error}", 0.0, attempts, input_error, placements)
    error, input_error = failures.get(claim["slot"]) or ("its slot ended without recording an outcome", False)
    return SpaceEvaluation(index, False, None, error, time.time() - claim["time"], attempts, input_error, placements)


def _space_dir(storage: Path, index: int) -> Path:
    return storage / f"space-{index}"


def _prepare_space_dir(storage: Path, index: int, space: SearchSpace) -> None:
    """Record which space ``space-<i>`` searches; drop an earlier call's claim, outcome and errors (this call
    searches again) and a checkpoint that belongs to another space."""
    space_dir = _space_dir(storage, index)
    record = space_dir / "space.json"
    text = json.dumps(space.to_dict(), sort_keys=True)
    if record.exists() and record.read_text() != text:
        logger.warning("%s held the search of another space; starting this one from scratch", space_dir)
        (space_dir / "search.pt").unlink(missing_ok=True)
        (space_dir / SEARCH_WEIGHTS_FILE).unlink(missing_ok=True)
    space_dir.mkdir(parents=True, exist_ok=True)
    for stale in (CLAIM, OUTCOME, ERRORS):
        (space_dir / stale).unlink(missing_ok=True)
    record.write_text(text)


def _attempts(storage: Path, index: int) -> int:
    log = _space_dir(storage, index) / ATTEMPTS
    return len(log.read_text().splitlines()) if log.exists() else 0


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _run_slot(params: dict[str, Any], *, spaces: list[dict], config: dict, data_path: str, storage: str,
              name: str, latency_table: str | None, pool: str | None, cell_logits: list | None,
              attempts_before: list[int], faults: dict[str, str | None]) -> None:
    """Tune trial function: one Train job that searches spaces until none is left, reported as one row."""
    slot = int(params["slot"])
    ray_config = Config.model_validate(config).ray
    trainer = torch_trainer(
        _slot_worker,
        {"slot": slot, "spaces": spaces, "config": config, "data_path": data_path, "storage": storage,
         "faults": faults, "latency_table": latency_table, "pool": pool, "cell_logits": cell_logits,
         "attempts_before": attempts_before, "max_attempts": 1 + ray_config.max_failures},
        workers=ray_config.workers_per_trial, cpus_per_worker=ray_config.cpus_per_worker,
        storage=Path(storage) / "train", name=f"{name}-slot-{slot}",
        max_failures=(1 + ray_config.max_failures) * len(spaces))  # every space can use its attempts
    row: dict[str, Any] = {"slot": slot, "failure": "", "input_error": False}
    try:
        result = trainer.fit()
    except train.TrainingFailedError as err:
        row["failure"] = str(err)
    else:
        if isinstance(result.return_value, dict) and INPUT_ERROR_KEY in result.return_value:
            row.update(failure=result.return_value[INPUT_ERROR_KEY], input_error=True)
    tune.report(row)


def _slot_worker(loop_config: dict[str, Any]) -> dict | None:
    """Train worker loop: search the spaces rank 0 claims, one after another, on this rank's share of every batch.

    A user error before the first space (the data set) is returned, not raised, so that
    Ray Train does not retry it (module docstring).
    """
    torch.set_num_threads(loop_config["threads"])
    placement = _gather_placement()
    try:
        config = Config.model_validate(loop_config["config"])
        data = load_search_data(config, Path(loop_config["data_path"]))
    except UserError as err:
        return {INPUT_ERROR_KEY: f"{type(err).__name__}: {err}"}
    rank = train.get_context().get_world_rank()
    while (index := _from_rank_0(_take_space(loop_config, placement) if rank == 0 else None)) is not None:
        _search_space(index, config, data, loop_config)
    return None


def _take_space(loop_config: dict[str, Any], placement: Placement) -> int | None:
    """Rank 0: the space this worker group searches next, its attempt and placement logged; None when done.

    First the space this slot claimed and left unfinished (the group restarted after a
    failure), unless it used all its attempts: it is then recorded as failed. Then the
    first space no slot has claimed yet.
    """
    storage, slot = Path(loop_config["storage"]), loop_config["slot"]
    for index in range(len(loop_config["spaces"])):
        space_dir = _space_dir(storage, index)
        claim = _read_json(space_dir / CLAIM)
        if claim is None or claim["slot"] != slot or (space_dir / OUTCOME).exists():
            continue
        if _attempts(storage, index) - loop_config["attempts_before"][index] < loop_config["max_attempts"]:
            return _start_attempt(space_dir, placement, index)
        errors = (space_dir / ERRORS).read_text().splitlines() if (space_dir / ERRORS).exists() else []
        write_json(space_dir / OUTCOME, _outcome(claim, None, errors[-1] if errors else
                                                  "its worker group was lost (a worker process or node died)"))
    for index in range(len(loop_config["spaces"])):
        space_dir = _space_dir(storage, index)
        try:
            descriptor = os.open(space_dir / CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        with os.fdopen(descriptor, "w") as claim:
            json.dump({"slot": slot, "time": time.time()}, claim)
        return _start_attempt(space_dir, placement, index)
    return None


def _start_attempt(space_dir: Path, placement: Placement, index: int) -> int:
    with open(space_dir / ATTEMPTS, "a") as log:
        log.write(f"{time.time():.3f}\n")
    with open(space_dir / PLACEMENTS, "a") as log:
        log.write(json.dumps(placement) + "\n")
    return index


def _outcome(claim: dict[str, Any], result: dict | None, error: str | None,
             input_error: bool = False) -> dict[str, Any]:
    return {"result": result, "error": error, "input_error": input_error,
            "wall_seconds": time.time() - claim["time"]}


def _search_space(index: int, config: Config, data: SearchData, loop_config: dict[str, Any]) -> None:
    """One space's search on every rank; rank 0 records its outcome. Any other error is logged and raised,
    so that Ray Train restarts the worker group on it."""
    rank = train.get_context().get_world_rank()
    space_dir = _space_dir(Path(loop_config["storage"]), index)
    result, error = None, None
    try:
        if rank == 0:
            _maybe_inject_fault(index, loop_config["faults"], space_dir)
        table, pool, logits = loop_config["latency_table"], loop_config["pool"], loop_config["cell_logits"]
        warm = WarmStart(weights=load_pool(Path(pool)) if pool is not None else None,
                         cell_logits=logits[index] if logits is not None else None)
        result = search(SearchSpace.from_dict(loop_config["spaces"][index]), data, search_settings(config),
                        checkpoint=space_dir / "search.pt",
                        latency_table=load_table(Path(table), config) if table is not None else None,
                        warm_start=warm, weights_out=space_dir / SEARCH_WEIGHTS_FILE).to_dict()
    except UserError as err:
        error = f"{type(err).__name__}: {err}"
    except Exception as err:
        with open(space_dir / ERRORS, "a") as log:
            log.write(f"{type(err).__name__}: {err}".replace("\n", " ") + "\n")
        raise
    if rank == 0:
        write_json(space_dir / OUTCOME, _outcome(_read_json(space_dir / CLAIM), result, error, error is not None))


def _from_rank_0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a broadcast; the value itself with one worker)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather_placement() -> Placement:
    """Every rank's Ray node, host name and node IP, in rank order (one all-gather over the worker group)."""
    here = {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
            "ip": ray.util.get_node_ip_address()}
    if not (dist.is_available() and dist.is_initialized()):
        return [here]
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, here)
    return everyone


def _maybe_inject_fault(index: int, faults: dict[str, str | None], space_dir: Path) -> None:
    """Fail on purpose as the module docstring describes, to exercise the retry path."""
    if faults.get(FAULT_ALWAYS_ENV) == str(index):
        raise RuntimeError("injected fault (always)")
    if faults.get(FAULT_ONCE_ENV) == str(index):
        fail_once(space_dir / "fault-injected")
