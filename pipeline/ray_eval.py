"""Score candidate spaces on Ray: Tune trials as slots that live across generations, searching space after space.

A :class:`SearchSlots` object runs ``min(trial_capacity, width)`` concurrent Ray
Tune trials, the *slots*, from its first :meth:`~SearchSlots.evaluate` call to
:meth:`~SearchSlots.close`; a run keeps one for all its generations and its final
search. A slot searches (:func:`spaces.search.search`) one space after another,
call after call: each call writes its spaces as a *batch* file under the slots'
control directory, rank 0 of an idle slot claims the next unclaimed space of the
oldest batch by creating ``<storage>/space-<i>/claim`` (exclusive create, so two
slots never take the same space, on any node that sees the storage) and
broadcasts it; with nothing to claim it polls until a batch comes or the slots
are closed. With ``ray.workers_per_trial: 1`` (the default) the trial searches in
its own process, which reserves the worker's CPUs: a Ray Train worker group would
add its start (controller, worker processes, torch, gloo; ~10 s a slot on 2 cores,
twice that for two slots starting together) and distribute nothing. With more
workers the trial function runs one Ray Train ``TorchTrainer`` whose gloo workers
search each space data-parallel. Either way the start (and a Tune trial's, ~3 s)
is paid once per slot and run instead of once per space.
Searches of unequal length balance themselves: a slot that finishes early takes
the next space. :func:`evaluate_spaces` is the one-call form (slots opened for
one batch and closed).

Results. Rank 0 writes each space's outcome to ``<storage>/space-<i>/outcome.json``
(the search result, or the error), and :meth:`SearchSlots.evaluate` reads them
back once every space of its batch has one, or was claimed by a slot whose trial
ended, or no slot is left: one :class:`SpaceEvaluation` per input space, in input
order. Under Train V2 a metrics-only ``ray.train.report`` is a collective every
rank would have to join, and a files-in-storage record survives a lost worker
group. A call clears the claims and outcomes an earlier call left in its
storage, so every space is searched again, from its checkpoint.

Retries happen in one layer only: Tune's for a slot that searches in its trial
(the failed trial is restarted, in a new process, on any node with the CPUs),
Ray Train's for a worker group (restarted inside the same trial: no new trial
actor or controller). Either way the restarted slot takes up the space it had
claimed, from its checkpoint ``space-<i>/search.pt``. Each space gets
``1 + ray.max_failures`` attempts (a slot taking it up; rank 0 logs each to
``space-<i>/attempts``): a slot that restarts on a space that used them all
records it as failed, with the last error logged in ``space-<i>/errors``, and
goes on with the next space. The retrying layer's budget is sized so that every
space the slots may search (``total``) can use its attempts; the other layer's
retries are off. A Train slot whose worker group still fails writes why to
``slot-<k>.json`` in the control directory, and leaves its claimed space failed
with that error; the other slots go on. When no slot is left, the call's
unclaimed spaces fail with the slots' error and the next call starts new slots.
:meth:`SearchSlots.evaluate` never raises for a search's failure.

Where work ran. Each slot's start (or worker group's) first gathers every rank's
Ray node (id, hostname, node IP) and process id (one all-gather) and rank 0
appends it to ``space-<i>/placements.jsonl`` of every space it starts or takes
up; the evaluation's ``placements`` are its attempts' lines
(:mod:`pipeline.placement`). A trial that searches itself goes to any node with
the CPUs; when its node is lost, Tune restarts it on the nodes left. A trial
function that runs a Train job is pinned to the head node
(:data:`~pipeline.cluster.ON_HEAD`), and with it the Train controller (Ray puts a
controller on its caller's node): a lost worker node then takes only Train
workers with it, which the controller restarts on the nodes left.

Deterministic errors are not retried. A :class:`~spaces.errors.UserError` (a
tampered or foreign checkpoint, a config the search rejects) would fail the same
way on every attempt, so the workers catch it and record it as the space's
outcome (``input_error=True``) after one attempt; every rank reads the
checkpoint, data and config before the first collective, so all ranks stop
together. A user error before any space (the data set cannot be read) ends the
slot and marks every space left as failed on the user's input.

Resources. Each worker (the trial itself, or each Train worker) reserves
``ray.cpus_per_worker`` CPUs, from the slots' start to their close, idle between
calls: the owner does its own work between calls (the evolution's update, latency measurements) in processes that
reserve no CPU, and closes the slots before anything that needs the CPUs (the
deploy stage). Idle workers other than rank 0 wait in a broadcast, which gloo
times out after Ray Train's 30 minutes. After a node loss the cluster may hold
fewer worker groups than there are slots: a call then asks idle slots to end
(``retire-<k>`` in the control directory), since a slot restarted on the nodes
left (a trial by Tune, a worker group by Ray Train, whose placement is retried
every 60 s) waits for CPUs, which an idle slot would otherwise hold for good. A
trial function that runs a Train job only waits on ``fit()``, so it reserves a
little memory and no CPU (Tune rejects an empty request): trials then never hold
CPUs their own workers need. No early
stopping: Tune stopping a Train-in-Tune trial leaks its workers' CPUs (see
STACK-NOTES), so every trial runs to its end.

Fault injection (tests, drills), read on the driver and passed to the workers
through ``train_loop_config``:

- ``AUTOSPACE_FAULT_SPACE=<i>``: space ``i``'s search raises on rank 0
  ``RuntimeError("injected fault")`` unless ``space-<i>/fault-injected`` exists;
  it creates that marker first, so the retry succeeds.
- ``AUTOSPACE_FAULT_SPACE_ALWAYS=<i>``: space ``i``'s search raises on rank 0
  ``RuntimeError("injected fault (always)")`` on every attempt.

A call's ``storage`` is one directory per batch (a generation), visible to every
node. Calling again with the same storage resumes each search from its
checkpoint (a crashed driver or evolution actor loses no finished epochs); a
checkpoint left there by a different space is discarded, since it cannot be
resumed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
import torch
import torch.distributed as dist
from ray import train, tune

from pipeline.cluster import (ON_HEAD, ensure_ray, fail_once, torch_trainer, worker_groups_that_fit,
                              worker_threads)
from pipeline.config import Config, ConfigError
from pipeline.latency_table import load_table, measure_spaces
from pipeline.placement import PLACEMENTS, Placement, read_placements
from pipeline.run_dir import write_json
from pipeline.search_job import load_search_data, search_settings
from pipeline.weight_pool import SEARCH_WEIGHTS_FILE, load_pool
from spaces.errors import UserError
from spaces.search import SearchData, SearchResult, WarmStart, search
from spaces.training import world
from spaces.space import SearchSpace

__all__ = ["SearchSlots", "SpaceEvaluation", "evaluate_spaces", "searches_in_trial", "trial_capacity"]

logger = logging.getLogger(__name__)

FAULT_ONCE_ENV = "AUTOSPACE_FAULT_SPACE"
FAULT_ALWAYS_ENV = "AUTOSPACE_FAULT_SPACE_ALWAYS"
# What a trial function reserves instead of CPU (it only blocks on fit()), on the head node (module docstring).
TRIAL_RESOURCES = {"cpu": 0, "memory": 64 * 2**20, "custom_resources": ON_HEAD}
INPUT_ERROR_KEY = "input_error"  # the key of a slot's returned user error
CLAIM, OUTCOME, ERRORS, ATTEMPTS = "claim", "outcome.json", "errors", "attempts"  # files in each space-<i>
# in the slots' control directory: the calls' batch files, the close marker, a request that one slot ends
BATCHES, CLOSED, RETIRE = "batches", "closed", "retire-"
POLL_SECONDS = 0.2  # how often an idle slot looks for a batch, and a call for its batch's outcomes


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


class SearchSlots:
    """Slots that search the spaces of every :meth:`evaluate` call until :meth:`close` (module docstring).

    Started by the first :meth:`evaluate` (after its latency measurements, which must
    not run beside a slot's start or a search), and again by a call that finds every
    slot ended. A caller that has other set-up to do (a run's tracking, its first
    generation) calls :meth:`start` first, so that their start (Tune trial, data, a
    Train worker group where a slot has several workers) overlaps it.

    Args:
        config: the pipeline config (search, budget, data limits, ray sections).
        data_path: the Parquet data set; every slot (each of its workers) loads it once.
        storage: where the slots' Tune experiment, Train runs and control files live.
        name: the Tune experiment's name (Train runs are ``<name>-slot-<k>``).
        width: the most spaces one call evaluates (slots beyond that would idle).
        total: the most spaces all calls evaluate (sizes Ray Train's retry budget).
    """

    def __init__(self, config: Config, data_path: Path, storage: Path, name: str, width: int, total: int) -> None:
        search_settings(config)  # a config the search rejects fails here, not in every worker
        self.config, self.name, self.width, self.total = config, name, width, total
        self.data_path, self.storage = Path(data_path).resolve(), Path(storage).resolve()
        self.starts = 0  # how many times slots were started (a restart after every slot ended is a new experiment)
        self.control: Path | None = None
        self.slots = 0
        self._batches = 0
        self._thread: threading.Thread | None = None
        self._grid: tune.ResultGrid | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> SearchSlots:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def evaluate(self, spaces: list[SearchSpace], storage: Path, latency_table: Path | None = None,
                 pool: Path | None = None,
                 cell_logits: list[list[list[list[float]]]] | None = None) -> list[SpaceEvaluation]:
        """Search every space in the slots; one evaluation per space, in input order.

        Args:
            spaces: candidate spaces, already adapted to the data set.
            storage: this batch's directory (one per generation) for the search checkpoints and outcomes.
            latency_table: the run's latency table file, needed under a latency budget: every
                entry the spaces can need is measured into it here, before the batch is handed
                out, and every search prices latency from it (visible to every node, like ``storage``).
            pool: a weight pool (:mod:`pipeline.weight_pool`) every search starts from, where it
                offers the pool's cells; each search leaves its own trained weights in
                ``<storage>/space-<i>/cells.pt``.
            cell_logits: per space, the op logits its search starts from (fitness priors).
        """
        if not spaces:
            return []
        if self.config.budget.metric == "latency":
            if latency_table is None:
                raise ValueError("budget.metric=latency: evaluating spaces needs the run's latency_table path")
            _, added = measure_spaces(latency_table, self.config, spaces)
            logger.info("latency table %s: %d entries measured for this batch", latency_table, added)
        else:
            latency_table = None
        storage = Path(storage).resolve()
        storage.mkdir(parents=True, exist_ok=True)
        for index, space in enumerate(spaces):
            _prepare_space_dir(storage, index, space)
        attempts_before = [_attempts(storage, i) for i in range(len(spaces))]
        placed_before = [len(read_placements(_space_dir(storage, i))) for i in range(len(spaces))]
        self._launch()
        assert self.control is not None
        write_json(self.control / BATCHES / f"{self._batches:06d}.json", {
            "storage": str(storage), "spaces": [s.to_dict() for s in spaces], "attempts_before": attempts_before,
            "latency_table": str(Path(latency_table).resolve()) if latency_table is not None else None,
            "pool": str(Path(pool).resolve()) if pool is not None else None, "cell_logits": cell_logits})
        self._batches += 1
        logger.info("evaluating %d spaces in %d slots under %s", len(spaces), self.slots, storage)
        while (failures := self._settled(storage, len(spaces))) is None:
            time.sleep(POLL_SECONDS)
        return [_evaluation(storage, i, attempts_before[i], placed_before[i], failures) for i in range(len(spaces))]

    def close(self) -> None:
        """Let the slots finish (their workers exit once idle) and wait for their trials to end."""
        if self._thread is None:
            return
        assert self.control is not None
        (self.control / CLOSED).touch()
        self._thread.join()
        self._thread = None
        if self._error is not None:
            logger.warning("the search slots' Tune run ended with %s: %s", type(self._error).__name__, self._error)

    def start(self) -> None:
        """Start the slots now (returns at once), unless the budget is on latency: then the first
        :meth:`evaluate` starts them once it has measured its spaces' latency."""
        if self.config.budget.metric != "latency":
            self._launch()

    def _launch(self) -> None:
        """Start the slots unless they run; a previous set whose every slot ended is closed first."""
        if self._thread is not None and self._thread.is_alive():
            return
        self.close()
        ensure_ray(self.config)
        name = self.name if self.starts == 0 else f"{self.name}-{self.starts}"
        self.starts += 1
        self.control = self.storage / "control" / name
        shutil.rmtree(self.control, ignore_errors=True)  # a crashed session's batches and slot records
        (self.control / BATCHES).mkdir(parents=True)
        self._batches, self._grid, self._error = 0, None, None
        self.slots = min(trial_capacity(self.config), self.width)
        ray_config = self.config.ray
        retries = (1 + ray_config.max_failures) * self.total  # every space can use its attempts
        in_trial = searches_in_trial(ray_config.workers_per_trial)
        trainable = tune.with_parameters(
            _run_slot, control=str(self.control), config=self.config.model_dump(mode="json"),
            data_path=str(self.data_path), storage=str(self.storage), name=name, max_failures=retries,
            faults={key: os.environ.get(key) for key in (FAULT_ONCE_ENV, FAULT_ALWAYS_ENV)})
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": ray_config.cpus_per_worker} if in_trial else TRIAL_RESOURCES),
            param_space={"slot": tune.grid_search(list(range(self.slots)))},
            tune_config=tune.TuneConfig(max_concurrent_trials=self.slots),
            run_config=tune.RunConfig(storage_path=str(self.storage), name=name, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=retries if in_trial else 0)))
        logger.info("starting %d search slots under %s", self.slots, self.storage / name)
        self._thread = threading.Thread(target=self._fit, args=(tuner,), name=f"search-slots-{name}", daemon=True)
        self._thread.start()

    def _fit(self, tuner: tune.Tuner) -> None:
        try:
            self._grid = tuner.fit()
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread (_ended)
            self._error = err

    def _ended(self) -> dict[int, tuple[str, bool] | None]:
        """Slots whose trial ended: why (error, is it the user's input), or None for a clean end.

        Raises:
            BaseException: what Tune's own ``fit`` raised, when it did.
        """
        assert self.control is not None
        ended = {row["slot"]: (row["failure"], row["input_error"]) if row["failure"] else None
                 for row in map(_read_json, self.control.glob("slot-*.json"))}
        if self._thread is not None and not self._thread.is_alive():
            if self._error is not None:
                raise self._error
            for trial in self._grid or []:  # a trial that ended without its record failed outside its Train job
                ended.setdefault(int(trial.config["slot"]), _slot_failure(trial))
            for slot in range(self.slots):
                ended.setdefault(slot, ("the slot's trial reported nothing", False))
        return ended

    def _settled(self, storage: Path, count: int) -> dict[int, tuple[str, bool] | None] | None:
        """The ended slots' failures once every space of the batch has its outcome or never will; else None."""
        ended = self._ended()
        busy = set()
        for index in range(count):
            space_dir = _space_dir(storage, index)
            if (space_dir / OUTCOME).exists():
                continue
            claim = _read_json(space_dir / CLAIM)
            if claim["slot"] not in ended if claim is not None else len(ended) < self.slots:
                busy.add(claim["slot"] if claim is not None else None)  # being searched, or waiting for a slot
        if not busy:
            return ended
        self._retire_beyond_capacity(ended, busy)
        return None

    def _retire_beyond_capacity(self, ended: dict[int, Any], busy: set[int | None]) -> None:
        """Ask idle slots to end when the cluster holds fewer worker groups than there are slots left (a node
        was lost): a worker group restarted elsewhere waits for the CPUs an idle slot would otherwise hold for
        good. The cluster growing back does not add slots."""
        assert self.control is not None
        retiring = {int(path.name.removeprefix(RETIRE)) for path in self.control.glob(f"{RETIRE}*")}
        live = [slot for slot in range(self.slots) if slot not in ended and slot not in retiring]
        try:
            capacity = trial_capacity(self.config)
        except ConfigError:  # not one worker group fits any more
            capacity = 0
        idle = [slot for slot in reversed(live) if slot not in busy]
        for slot in idle[:len(live) - capacity]:
            logger.warning("search slot %d ends: the cluster now holds %d worker groups", slot, capacity)
            (self.control / f"{RETIRE}{slot}").touch()


def evaluate_spaces(spaces: list[SearchSpace], config: Config, data_path: Path, storage: Path,
                    name: str, latency_table: Path | None = None, pool: Path | None = None,
                    cell_logits: list[list[list[list[float]]]] | None = None) -> list[SpaceEvaluation]:
    """One batch through slots of its own, opened and closed here (:meth:`SearchSlots.evaluate` for the args)."""
    with SearchSlots(config, data_path, storage, name, width=len(spaces), total=len(spaces)) as slots:
        return slots.evaluate(spaces, storage, latency_table, pool, cell_logits)


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


def _run_slot(params: dict[str, Any], *, control: str, config: dict, data_path: str, storage: str, name: str,
              max_failures: int, faults: dict[str, str | None]) -> None:
    """Tune trial function: search the batches' spaces until the slots are closed, here (one worker) or in
    one Train job of ``ray.workers_per_trial`` workers (module docstring)."""
    slot = int(params["slot"])
    ray_config = Config.model_validate(config).ray
    loop_config = {"slot": slot, "control": control, "config": config, "data_path": data_path, "faults": faults,
                   "max_attempts": 1 + ray_config.max_failures}
    row: dict[str, Any] = {"slot": slot, "failure": "", "input_error": False}
    if searches_in_trial(ray_config.workers_per_trial):  # an error ends the trial: Tune restarts it
        returned = _slot_worker({**loop_config, "threads": worker_threads(ray_config.cpus_per_worker)})
    else:
        trainer = torch_trainer(_slot_worker, loop_config, workers=ray_config.workers_per_trial,
                                cpus_per_worker=ray_config.cpus_per_worker, storage=Path(storage) / "train",
                                name=f"{name}-slot-{slot}", max_failures=max_failures)
        try:
            returned = trainer.fit().return_value
        except train.TrainingFailedError as err:
            returned, row["failure"] = None, str(err)
    if isinstance(returned, dict) and INPUT_ERROR_KEY in returned:
        row.update(failure=returned[INPUT_ERROR_KEY], input_error=True)
    write_json(Path(control) / f"slot-{slot}.json", row)  # read while the other slots go on
    tune.report(row)


def searches_in_trial(workers: int) -> bool:
    """Whether a slot searches in its Tune trial's own process: with one worker there is nothing to
    distribute, and a Train worker group's start (~10 s a slot) would buy nothing."""
    return workers == 1


class _Batches:
    """The batch files of a slots' control directory, read once each (a batch never changes)."""

    def __init__(self, control: Path) -> None:
        self.control = control
        self._read: dict[str, dict[str, Any]] = {}

    def get(self, name: str) -> dict[str, Any]:
        if name not in self._read:
            self._read[name] = _read_json(self.control / BATCHES / name)
        return self._read[name]

    def names(self) -> list[str]:
        """Every batch handed out so far, oldest first (a batch file appears whole: written atomically)."""
        return sorted(p.name for p in (self.control / BATCHES).glob("*.json"))

    def closed(self) -> bool:
        return (self.control / CLOSED).exists()


def _slot_worker(loop_config: dict[str, Any]) -> dict | None:
    """A slot's loop, in each Train worker or in the trial itself: search the spaces rank 0 claims, one after
    another, on this rank's share of every batch.

    A user error before the first space (the data set) is returned, not raised, so that
    neither Tune nor Ray Train retries it (module docstring).
    """
    torch.set_num_threads(loop_config["threads"])
    placement = _gather_placement()
    try:
        config = Config.model_validate(loop_config["config"])
        data = load_search_data(config, Path(loop_config["data_path"]))
    except UserError as err:
        return {INPUT_ERROR_KEY: f"{type(err).__name__}: {err}"}
    rank, _ = world()
    batches = _Batches(Path(loop_config["control"]))
    while (work := _from_rank_0(_next_space(batches, loop_config, placement) if rank == 0 else None)) is not None:
        name, index = work
        _search_space(batches.get(name), index, config, data, loop_config["faults"])
    return None


def _next_space(batches: _Batches, loop_config: dict[str, Any], placement: Placement) -> tuple[str, int] | None:
    """Rank 0: (batch, space) this worker group searches next, oldest batch first; waits while there is none;
    None once the slots are closed or this slot is asked to end."""
    while True:
        closed = batches.closed()  # before looking: a batch handed out before the close is never missed
        for name in batches.names():
            index = _take_space(batches.get(name), loop_config["slot"], loop_config["max_attempts"], placement)
            if index is not None:
                return name, index
        if closed or (batches.control / f"{RETIRE}{loop_config['slot']}").exists():
            return None
        time.sleep(POLL_SECONDS)


def _take_space(batch: dict[str, Any], slot: int, max_attempts: int, placement: Placement) -> int | None:
    """Rank 0: the space of ``batch`` this worker group searches next, its attempt and placement logged; None
    when the batch has nothing for it.

    First the space this slot claimed and left unfinished (the group restarted after a
    failure), unless it used all its attempts: it is then recorded as failed. Then the
    first space no slot has claimed yet.
    """
    storage = Path(batch["storage"])
    count = len(batch["spaces"])
    for index in range(count):
        space_dir = _space_dir(storage, index)
        claim = _read_json(space_dir / CLAIM)
        if claim is None or claim["slot"] != slot or (space_dir / OUTCOME).exists():
            continue
        if _attempts(storage, index) - batch["attempts_before"][index] < max_attempts:
            return _start_attempt(space_dir, placement, index)
        errors = (space_dir / ERRORS).read_text().splitlines() if (space_dir / ERRORS).exists() else []
        write_json(space_dir / OUTCOME, _outcome(claim, None, errors[-1] if errors else
                                                  "its slot was lost (a worker process or node died)"))
    for index in range(count):
        space_dir = _space_dir(storage, index)
        if _claim(space_dir, slot):
            return _start_attempt(space_dir, placement, index)
    return None


def _claim(space_dir: Path, slot: int) -> bool:
    """Claim the space for ``slot`` unless a slot has: the claim file appears whole or not at all (a hard link
    of a written file, which fails when the claim exists, also on NFS)."""
    if (space_dir / CLAIM).exists():
        return False
    written = space_dir / f".claim-{slot}-{os.getpid()}"
    written.write_text(json.dumps({"slot": slot, "time": time.time()}))
    try:
        os.link(written, space_dir / CLAIM)
    except FileExistsError:
        return False
    finally:
        written.unlink()
    return True


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


def _search_space(batch: dict[str, Any], index: int, config: Config, data: SearchData,
                  faults: dict[str, str | None]) -> None:
    """One space's search on every rank; rank 0 records its outcome. Any other error is logged and raised,
    so that Ray Train restarts the worker group (Tune the trial) on it."""
    rank, _ = world()
    space_dir = _space_dir(Path(batch["storage"]), index)
    result, error = None, None
    try:
        if rank == 0:
            _maybe_inject_fault(index, faults, space_dir)
        table, pool, logits = batch["latency_table"], batch["pool"], batch["cell_logits"]
        warm = WarmStart(weights=load_pool(Path(pool)) if pool is not None else None,
                         cell_logits=logits[index] if logits is not None else None)
        result = search(SearchSpace.from_dict(batch["spaces"][index]), data, search_settings(config),
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
    """Every rank's Ray node, host name, node IP and process id, in rank order (one all-gather over the worker
    group); the process ids tell one worker group from another."""
    here = {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
            "ip": ray.util.get_node_ip_address(), "pid": os.getpid()}
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
