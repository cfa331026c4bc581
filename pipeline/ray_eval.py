"""Score a generation's candidate spaces on Ray: one Tune trial per space, each a Train job.

Every candidate space becomes one Ray Tune trial. The trial function builds a
Ray Train ``TorchTrainer`` that runs the supernet search (:func:`spaces.search.search`)
data-parallel over ``ray.workers_per_trial`` gloo workers, waits for ``fit()``
and reports one row to Tune. This is the pattern Ray 2.60 supports (Train V2 is
the default; a trainer passed straight to ``tune.Tuner`` is rejected).

Results. Rank 0's search result comes back as the training function's return
value (``ray.train.Result.return_value``): under Train V2, ``Result.metrics``
only keeps metrics attached to a checkpoint, and a metrics-only
``ray.train.report`` is a collective every rank would have to join. The trial
function forwards it to Tune as JSON, and :func:`evaluate_spaces` returns one
:class:`SpaceEvaluation` per input space, in input order.

Retries happen in one layer only, Ray Train's: ``FailureConfig(max_failures=
ray.max_failures)`` on the trainer, so a failed worker group is restarted inside
the same trial (no new trial actor or controller) and the search resumes from
its checkpoint ``<storage>/space-<i>/search.pt``. Tune's own retries are off; a
trial that still fails reports ``ok=False`` with the error, and an unexpected
trial crash is turned into ``ok=False`` too, so :func:`evaluate_spaces` never
raises for a trial's failure. ``attempts`` counts the worker-group starts, which
rank 0 logs to ``<storage>/space-<i>/attempts``.

Where work ran. Each worker-group start first gathers every rank's Ray node (id,
hostname, node IP; one all-gather) and rank 0 appends it to
``<storage>/space-<i>/placements.jsonl``; the evaluation's ``placements`` are its
attempts' lines (:mod:`pipeline.placement`). Trial functions are pinned to the head
node (:data:`~pipeline.cluster.ON_HEAD`), and with them the Train controllers (Ray
puts a controller on its caller's node): a lost worker node then takes only Train
workers with it, which the controller restarts on the nodes left.

Deterministic errors are not retried. A :class:`~spaces.errors.UserError` (a
tampered or foreign checkpoint, a config the search rejects) would fail the same
way on every attempt, and Ray Train's failure policy retries every worker error
alike (it has no per-exception setting). So the worker catches it and returns it
as its result: the job ends after one attempt and the evaluation says
``input_error=True`` with the message. Every rank reads the checkpoint, data and
config before the first collective, so all ranks stop together.

Resources. Each Train worker reserves ``ray.cpus_per_worker`` CPUs. The trial
function only waits on ``fit()``, so it reserves a little memory and no CPU (Tune
rejects an empty request): trials then never hold CPUs their own workers need,
and ``cluster CPUs // (workers_per_trial * cpus_per_worker)`` trials run at once.
No early stopping: Tune stopping a Train-in-Tune trial leaks its workers' CPUs
(see STACK-NOTES), so every trial runs to its end.

Fault injection (tests, drills), read on the driver and passed to the workers
through ``train_loop_config``:

- ``AUTOSPACE_FAULT_SPACE=<i>``: trial ``i``'s rank 0 raises
  ``RuntimeError("injected fault")`` unless ``<storage>/space-<i>/fault-injected``
  exists; it creates that marker first, so the retry succeeds.
- ``AUTOSPACE_FAULT_SPACE_ALWAYS=<i>``: trial ``i``'s rank 0 raises
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
from pipeline.search_job import load_search_data, search_settings
from pipeline.weight_pool import SEARCH_WEIGHTS_FILE, load_pool
from spaces.errors import UserError
from spaces.search import SearchResult, WarmStart, search
from spaces.space import SearchSpace

__all__ = ["SpaceEvaluation", "evaluate_spaces", "trial_capacity"]

logger = logging.getLogger(__name__)

FAULT_ONCE_ENV = "AUTOSPACE_FAULT_SPACE"
FAULT_ALWAYS_ENV = "AUTOSPACE_FAULT_SPACE_ALWAYS"
# What a trial function reserves instead of CPU (it only blocks on fit()), on the head node (module docstring).
TRIAL_RESOURCES = {"cpu": 0, "memory": 64 * 2**20, "custom_resources": ON_HEAD}
INPUT_ERROR_KEY = "input_error"  # the key of a worker's returned user error (a search result never has it)


@dataclass
class SpaceEvaluation:
    """The outcome of one candidate space's trial, JSON-friendly."""

    index: int
    ok: bool
    result: SearchResult | None  # None unless ok
    error: str | None
    wall_seconds: float
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
    """How many trials run at once: the configured limit, capped by the cluster's CPUs.

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
    """Run one supernet search per space as concurrent Tune trials; results in input order.

    Args:
        spaces: candidate spaces, already adapted to the data set.
        config: the pipeline config (search, budget, data limits, ray sections).
        data_path: the Parquet data set; every worker loads it itself.
        storage: this generation's directory for Tune/Train outputs and search checkpoints.
        name: the Tune experiment's name (Train runs are ``<name>-space-<i>``).
        latency_table: the run's latency table file, needed under a latency budget: every
            entry the spaces can need is measured into it here, before any trial starts,
            and every trial prices latency from it (visible to every node, like ``storage``).
        pool: a weight pool (:mod:`pipeline.weight_pool`) every search starts from, where it
            offers the pool's cells; each search leaves its own trained weights in
            ``<storage>/space-<i>/cells.pt``.
        cell_logits: per space, the op logits its search starts from (fitness priors).
    """
    search_settings(config)  # a config the search rejects fails here, not in every trial
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
        _run_trial, spaces=[s.to_dict() for s in spaces], config=config.model_dump(mode="json"),
        data_path=str(Path(data_path).resolve()), storage=str(storage), name=name,
        latency_table=str(Path(latency_table).resolve()) if latency_table is not None else None,
        pool=str(Path(pool).resolve()) if pool is not None else None, cell_logits=cell_logits,
        faults={key: os.environ.get(key) for key in (FAULT_ONCE_ENV, FAULT_ALWAYS_ENV)})
    concurrency = min(trial_capacity(config), len(spaces))
    logger.info("evaluating %d spaces, %d at a time, under %s", len(spaces), concurrency, storage / name)
    tuner = tune.Tuner(
        tune.with_resources(trainable, TRIAL_RESOURCES),
        param_space={"index": tune.grid_search(list(range(len(spaces))))},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(storage_path=str(storage), name=name, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)))
    grid = tuner.fit()

    placements = [read_placements(_space_dir(storage, i))[placed_before[i]:] for i in range(len(spaces))]
    evaluations: dict[int, SpaceEvaluation] = {}
    for trial in grid:
        index = int(trial.config["index"])
        attempts = _attempts(storage, index) - attempts_before[index]
        metrics = trial.metrics or {}
        if trial.error is not None or "ok" not in metrics:
            error = str(trial.error) if trial.error is not None else "the trial reported no result"
            evaluations[index] = SpaceEvaluation(index, False, None, error,
                                                 float(metrics.get("time_total_s", 0.0)), attempts,
                                                 placements=placements[index])
        else:
            result = SearchResult.from_dict(json.loads(metrics["result_json"])) if metrics["ok"] else None
            evaluations[index] = SpaceEvaluation(index, bool(metrics["ok"]), result, metrics["failure"] or None,
                                                 float(metrics["wall_seconds"]), attempts,
                                                 bool(metrics.get("input_error", False)), placements[index])
    return [evaluations.get(i, SpaceEvaluation(i, False, None, "Tune returned no trial for this space", 0.0,
                                               _attempts(storage, i) - attempts_before[i],
                                               placements=placements[i]))
            for i in range(len(spaces))]


def _space_dir(storage: Path, index: int) -> Path:
    return storage / f"space-{index}"


def _prepare_space_dir(storage: Path, index: int, space: SearchSpace) -> None:
    """Record which space ``space-<i>`` searches; drop a checkpoint that belongs to another one."""
    space_dir = _space_dir(storage, index)
    record = space_dir / "space.json"
    text = json.dumps(space.to_dict(), sort_keys=True)
    if record.exists() and record.read_text() != text:
        logger.warning("%s held the search of another space; starting this one from scratch", space_dir)
        (space_dir / "search.pt").unlink(missing_ok=True)
        (space_dir / SEARCH_WEIGHTS_FILE).unlink(missing_ok=True)
    space_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(text)


def _attempts(storage: Path, index: int) -> int:
    log = _space_dir(storage, index) / "attempts"
    return len(log.read_text().splitlines()) if log.exists() else 0


def _run_trial(params: dict[str, Any], *, spaces: list[dict], config: dict, data_path: str, storage: str,
               name: str, latency_table: str | None, pool: str | None, cell_logits: list | None,
               faults: dict[str, str | None]) -> None:
    """Tune trial function: one Train job searching one space, reported to Tune as one row."""
    start = time.perf_counter()
    index = int(params["index"])
    ray_config = Config.model_validate(config).ray
    trainer = torch_trainer(
        _search_worker,
        {"index": index, "space": spaces[index], "config": config, "data_path": data_path,
         "space_dir": str(_space_dir(Path(storage), index)), "faults": faults, "latency_table": latency_table,
         "pool": pool, "cell_logits": cell_logits[index] if cell_logits is not None else None},
        workers=ray_config.workers_per_trial, cpus_per_worker=ray_config.cpus_per_worker,
        storage=Path(storage) / "train", name=f"{name}-space-{index}", max_failures=ray_config.max_failures)
    row: dict[str, Any] = {"index": index, "ok": False, "result_json": "", "failure": "", "input_error": False}
    try:
        result = trainer.fit()
    except train.TrainingFailedError as err:
        row["failure"] = str(err)
    else:
        if isinstance(result.return_value, dict) and INPUT_ERROR_KEY in result.return_value:
            row.update(failure=result.return_value[INPUT_ERROR_KEY], input_error=True)
        elif not isinstance(result.return_value, dict):
            row["failure"] = f"the search on rank 0 returned {type(result.return_value).__name__}, not a result dict"
        else:
            row.update(ok=True, result_json=json.dumps(result.return_value),
                       val_accuracy=result.return_value["val_accuracy"], madds=result.return_value["madds"])
    row["wall_seconds"] = time.perf_counter() - start
    tune.report(row)


def _search_worker(loop_config: dict[str, Any]) -> dict | None:
    """Train worker loop: the search on this rank's share of every batch; rank 0 returns the result.

    A user error is returned, not raised, so that Ray Train does not retry it (module docstring).
    """
    try:
        return _search(loop_config)
    except UserError as err:
        return {INPUT_ERROR_KEY: f"{type(err).__name__}: {err}"}


def _search(loop_config: dict[str, Any]) -> dict | None:
    rank = train.get_context().get_world_rank()
    torch.set_num_threads(loop_config["threads"])
    space_dir = Path(loop_config["space_dir"])
    placement = _gather_placement()
    if rank == 0:
        space_dir.mkdir(parents=True, exist_ok=True)
        with open(space_dir / "attempts", "a") as log:
            log.write(f"{time.time():.3f}\n")
        with open(space_dir / PLACEMENTS, "a") as log:
            log.write(json.dumps(placement) + "\n")
        _maybe_inject_fault(loop_config["index"], loop_config["faults"], space_dir)
    config = Config.model_validate(loop_config["config"])
    data = load_search_data(config, Path(loop_config["data_path"]))
    table, pool = loop_config["latency_table"], loop_config["pool"]
    warm = WarmStart(weights=load_pool(Path(pool)) if pool is not None else None,
                     cell_logits=loop_config["cell_logits"])
    result = search(SearchSpace.from_dict(loop_config["space"]), data, search_settings(config),
                    checkpoint=space_dir / "search.pt",
                    latency_table=load_table(Path(table), config) if table is not None else None,
                    warm_start=warm, weights_out=space_dir / SEARCH_WEIGHTS_FILE)
    return result.to_dict() if rank == 0 else None


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
