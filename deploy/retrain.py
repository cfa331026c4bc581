"""Train the final architectures from scratch: Optuna-tuned hyper-parameters, then Ray Train.

Method. For each architecture (:func:`retrain_front`):

1. :func:`tune_hyperparameters`: Ray Tune draws ``retrain.tuning_trials``
   configurations (learning rate and weight decay log-uniform, label smoothing
   and shift-augmentation strength uniform, each within its configured range)
   from Optuna's seeded TPE sampler. A trial trains on the train split for up to
   ``retrain.tuning_epochs`` epochs and reports validation accuracy after each;
   ASHA stops trials whose accuracy at a rung (epoch 1, 2, 4, ...) falls below
   the best ``1 / ASHA_REDUCTION_FACTOR`` seen at that rung so far.
2. :func:`retrain`: a Ray Train ``TorchTrainer`` with ``retrain.workers`` gloo
   workers trains ``ChildNet(arch)`` on train+val with the best configuration and
   the recipe of :mod:`deploy.recipe` (warm-up and cosine schedule, label smoothing,
   shift / flip / erasing, EMA), within ``retrain.minutes`` or what the run's
   ``wall_time_minutes`` leaves (:func:`training_minutes`), then measures test accuracy.

Why tuning trials are single-process. When Tune stops a Train-in-Tune trial
early, that trial's Train workers keep their CPUs reserved and later trials hang
(see STACK-NOTES). Early stopping is the point of ASHA, so a tuning trial is a
plain function trainable that trains in the trial actor itself on 1 CPU: Tune
can stop it at any moment and its CPU is released with the actor.

Resumability. The final training checkpoints after every epoch (weights,
optimizer, scheduler and data-order generator state) to ``<storage>/checkpoint.pt``
and resumes from it when called again with the same storage; the augmentation
draws from a generator seeded per (seed, epoch, rank), so a resumed run is
bit-identical to an uninterrupted one. Tuning is cached as
``<storage>/tuning.json`` once it has finished, and :func:`retrain_front` skips
architectures whose ``result.json`` exists. An interrupted tuning keeps its
finished trials: the driver records each trial as Tune finishes it (run to the
end, stopped by ASHA, or failed) in ``<storage>/tuning-trials.json``, and a rerun
runs only the trials still missing, giving Optuna the recorded ones as evaluated
points (``points_to_evaluate`` with ``evaluated_rewards``). ``Tuner.restore`` is
not used: it does not restore an ``OptunaSearch``'s state (ray#30861). The resumed
tuning's sampler is told the recorded results and seeded from the seed and the
number of trials kept (seeded as before, it would draw the kept configurations
again), and ASHA's rungs start afresh: its new draws are deterministic but not
the ones the uninterrupted tuning would have made. A trial that was running when
the run stopped is lost and replaced by a new draw.

Fault injection (tests, drills): ``AUTOSPACE_RETRAIN_FAULT_EPOCH=<k>`` makes rank 0
raise ``RuntimeError("injected fault")`` right after checkpointing epoch ``k``
(1-based) unless ``<storage>/fault-injected`` exists; it creates that marker first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from optuna.samplers import TPESampler
from ray import train, tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from deploy.recipe import Hyperparameters, Training
from pipeline.cluster import ensure_ray, fail_once, torch_trainer, worker_groups_that_fit
from pipeline.config import Config, ConfigError
from pipeline.data import load_dataset, read_info
from pipeline.run_clock import RunClock
from pipeline.run_dir import write_json
from spaces.arch import Arch
from spaces.atomic import write_atomically
from spaces.errors import cut
from spaces.search import read_checkpoint
from spaces.training import evaluate, recalibrate_bn, steps_per_epoch, world
from spaces.supernet import resize_input

__all__ = ["AFTER_TRAINING_MINUTES", "ASHA_REDUCTION_FACTOR", "Hyperparameters", "RetrainResult", "TuningResult",
           "retrain", "retrain_front", "training_minutes", "tune_hyperparameters", "untuned_hyperparameters",
           "validate_archs"]

logger = logging.getLogger(__name__)

ASHA_REDUCTION_FACTOR = 2
CHECKPOINT_FORMAT = "autospace-retrain-checkpoint/2"
FAULT_ENV = "AUTOSPACE_RETRAIN_FAULT_EPOCH"
METRIC = "val_accuracy"
PRECISE_BN_IMAGES = 2048  # training images the final model's BN statistics are re-estimated on
# Kept free after a final training within wall_time_minutes: test and precise BN, export, registry and the report
# took ~0.5 minutes in the preset run; the rest covers a last epoch slower than the plan's pace and the CLI's start.
AFTER_TRAINING_MINUTES = 3.0


@dataclass
class TuningResult:
    """One architecture's tuning: the chosen hyper-parameters and every trial, JSON-friendly."""

    arch: str
    best: Hyperparameters
    best_val_accuracy: float
    max_t: int
    trials: list[dict[str, Any]]
    wall_seconds: float

    @property
    def stopped_early(self) -> int:
        """Trials ASHA stopped before ``max_t`` epochs."""
        return sum(t["iterations"] < self.max_t for t in self.trials if t["error"] is None)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "best": self.best.to_dict(), "stopped_early": self.stopped_early}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TuningResult:
        fields = {k: v for k, v in data.items() if k not in ("key", "stopped_early")}
        return cls(**{**fields, "best": Hyperparameters.from_dict(data["best"])})


@dataclass
class RetrainResult:
    """One architecture trained from scratch: test accuracy, per-epoch history, final weights.

    ``wall_seconds`` is the last :func:`retrain` call's (a resumed run counts only its own part);
    ``tuning`` is the :class:`TuningResult` as a dict when :func:`retrain_front` made it.
    """

    arch: str
    hparams: dict[str, float]
    test_accuracy: float
    history: list[dict[str, float]]
    wall_seconds: float
    weights_path: str
    seed: int
    epochs: int
    workers: int
    tuning: dict[str, Any] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetrainResult:
        return cls(**data)


def validate_archs(archs: list[Arch], data_path: Path) -> None:
    """Fail before any training when an architecture cannot take the data set's images or labels."""
    if not archs:
        raise ValueError("no architectures to retrain: the list is empty")
    info = read_info(Path(data_path))
    for arch in archs:  # input errors (an architecture a user brings): ConfigError, one line in the CLI
        if arch.num_classes != info.num_classes:
            raise ConfigError(f"architecture {cut(arch.encode())!r} has {arch.num_classes} classes but the data "
                              f"set {data_path} has {info.num_classes}; set classes={info.num_classes} in the arch "
                              "or point data.path at its data set")
        if arch.in_channels != info.shape[0]:
            raise ConfigError(f"architecture {cut(arch.encode())!r} takes {arch.in_channels} input channels but "
                              f"the data set {data_path} has {info.shape[0]}; set input={info.shape[0]}x"
                              f"{arch.input_size} in the arch or point data.path at its data set")


def tune_hyperparameters(arch: Arch, config: Config, data_path: Path, storage: Path) -> TuningResult:
    """Optuna (TPE) + ASHA over the configured ranges; the best trial that ran all epochs wins.

    Each trial is a plain function trainable on 1 CPU that trains in its own actor
    process, never a Train-in-Tune job: ASHA stops trials early, and a stopped
    Train-in-Tune trial would leak its workers' CPUs. Returns the cached result
    when ``<storage>/tuning.json`` holds a finished tuning of this architecture with
    the same retrain settings and data limits; keeps the trials an interrupted
    tuning of the same settings recorded in ``<storage>/tuning-trials.json``.
    """
    validate_archs([arch], data_path)
    storage = Path(storage).resolve()
    cache = storage / "tuning.json"
    key = _settings_key(arch, config)
    if cache.exists() and (cached := json.loads(cache.read_text())).get("key") == key:
        return TuningResult.from_dict(cached)
    start = time.perf_counter()
    settings = config.retrain
    space = _search_space(config)
    record = storage / "tuning-trials.json"
    kept = _recorded_trials(record, key)[:settings.tuning_trials]
    trials = list(kept)
    if len(kept) < settings.tuning_trials:
        trials += _run_tuning(arch, config, data_path, storage, space, key, kept)
    finished = [t for t in trials if t["error"] is None and t["val_accuracy"] is not None]
    if not finished:
        raise RuntimeError(f"every tuning trial of {arch.encode()!r} failed; first error: {trials[0]['error']}")
    best = max(finished, key=lambda t: (t["iterations"] >= settings.tuning_epochs, t["val_accuracy"]))
    result = TuningResult(arch.encode(), Hyperparameters.from_dict(best["hparams"]), best["val_accuracy"],
                          settings.tuning_epochs, trials, time.perf_counter() - start)
    write_json(cache, {"key": key, **result.to_dict()})
    logger.info("tuned %s: %d trials (%d kept from an interrupted tuning), %d stopped early, best val accuracy "
                "%.3f with %s", arch.encode(), len(trials), len(kept), result.stopped_early,
                result.best_val_accuracy, result.best)
    return result


def _run_tuning(arch: Arch, config: Config, data_path: Path, storage: Path, space: dict[str, Any],
                key: dict[str, Any], kept: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tuning trials still missing after ``kept``, run on Tune; Optuna is told the kept ones first."""
    settings = config.retrain
    told = [t for t in kept if t["error"] is None and t["val_accuracy"] is not None]
    ensure_ray(config)
    trainable = tune.with_parameters(_tuning_trial, arch=arch.encode(), config=config.model_dump(mode="json"),
                                     data_path=str(Path(data_path).resolve()))
    # A sampler seeded as before would draw the kept trials' configurations again (telling Optuna results does
    # not advance its random stream): a resumed tuning seeds it from (seed, trials kept) instead.
    seed = settings.seed if not kept else int(np.random.SeedSequence([settings.seed, len(kept)]).generate_state(1)[0])
    searcher = OptunaSearch(metric=METRIC, mode="max", sampler=TPESampler(seed=seed),
                            points_to_evaluate=[t["hparams"] for t in told] or None,
                            evaluated_rewards=[t["val_accuracy"] for t in told] or None)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=ASHAScheduler(metric=METRIC, mode="max", max_t=settings.tuning_epochs, grace_period=1,
                                    reduction_factor=ASHA_REDUCTION_FACTOR),
            num_samples=settings.tuning_trials - len(kept), max_concurrent_trials=config.ray.max_concurrent_trials,
            time_budget_s=None if settings.tuning_minutes is None else settings.tuning_minutes * 60,
            reuse_actors=True),  # a finished or stopped trial's actor, torch imported, takes the next one
        run_config=tune.RunConfig(storage_path=str(storage), name="tune", verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0),
                                  callbacks=[_TrialRecorder(storage / "tuning-trials.json", key, kept)]))
    return [_trial_record(trial.config, trial.metrics or {}, None if trial.error is None else str(trial.error))
            for trial in tuner.fit()]


def _trial_record(params: dict[str, Any], metrics: dict[str, Any], error: str | None) -> dict[str, Any]:
    """One tuning trial as :class:`TuningResult` keeps it (and ``tuning-trials.json`` records it)."""
    return {"hparams": Hyperparameters.from_dict(params).to_dict(),
            "iterations": int(metrics.get("training_iteration", 0)), "val_accuracy": metrics.get(METRIC),
            "error": error}


def _recorded_trials(path: Path, key: dict[str, Any]) -> list[dict[str, Any]]:
    """The trials an interrupted tuning of the same settings finished; none if the record is another's or broken."""
    if not path.exists():
        return []
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        logger.warning("%s cannot be read; tuning starts over", path)
        return []
    if not isinstance(record, dict) or record.get("key") != key or not isinstance(record.get("trials"), list):
        return []
    return record["trials"]


class _TrialRecorder(tune.Callback):
    """Records each tuning trial as Tune finishes it (the driver's view), so an interrupted tuning keeps it."""

    def __init__(self, path: Path, key: dict[str, Any], kept: list[dict[str, Any]]) -> None:
        self.path, self.key, self.trials = path, key, list(kept)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._add(trial, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._add(trial, f"the trial failed (see {trial.path})")

    def _add(self, trial: Any, error: str | None) -> None:
        self.trials.append(_trial_record(trial.config, trial.last_result or {}, error))
        write_json(self.path, {"key": self.key, "trials": self.trials})


def retrain(arch: Arch, hparams: Hyperparameters, config: Config, data_path: Path, storage: Path,
            minutes: float | None = None) -> RetrainResult:
    """Train ``ChildNet(arch)`` from scratch on train+val with ``retrain.workers`` Ray Train workers.

    Resumes from ``<storage>/checkpoint.pt`` (a finished checkpoint only re-evaluates);
    writes the final ``state_dict`` to ``<storage>/weights.pt``. ``minutes`` bounds the
    epochs (re-planned after each); None = ``retrain.minutes``.

    Raises:
        ValueError: the architecture does not fit the data set.
        ConfigError: the workers need more CPUs than the Ray cluster has.
        CheckpointError: the checkpoint belongs to another architecture or settings.
        ray.train.TrainingFailedError: the workers failed more than ``ray.max_failures`` times.
    """
    validate_archs([arch], data_path)
    start = time.perf_counter()
    storage = Path(storage).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    run = _run_key(arch, hparams, config)
    if (storage / "checkpoint.pt").exists():
        _load_checkpoint(storage / "checkpoint.pt", run)  # a mismatch fails here, not inside a worker
    ensure_ray(config)
    workers = config.retrain.workers
    cpus, cpus_field = ((config.ray.cpus_per_worker, "ray.cpus_per_worker") if config.retrain.cpus_per_worker is None
                        else (config.retrain.cpus_per_worker, "retrain.cpus_per_worker"))
    worker_groups_that_fit("the final training", workers, cpus, "retrain.workers", cpus_field)
    trainer = torch_trainer(
        _retrain_worker,
        {"arch": arch.encode(), "hparams": hparams.to_dict(), "run": run, "config": config.model_dump(mode="json"),
         "data_path": str(Path(data_path).resolve()), "storage": str(storage),
         "fault_epoch": os.environ.get(FAULT_ENV),
         "minutes": config.retrain.minutes if minutes is None else minutes},
        workers=workers, cpus_per_worker=cpus, storage=storage / "ray", name="retrain",
        max_failures=config.ray.max_failures)
    outcome = trainer.fit().return_value
    return RetrainResult(arch=arch.encode(), hparams=hparams.to_dict(), test_accuracy=outcome["test_accuracy"],
                         history=outcome["history"], wall_seconds=time.perf_counter() - start,
                         weights_path=str(storage / "weights.pt"), seed=config.retrain.seed,
                         epochs=outcome["epochs"], workers=workers)


def retrain_front(archs: list[Arch], config: Config, data_path: Path, storage: Path,
                  tuned: bool = True, clock: RunClock | None = None) -> list[RetrainResult]:
    """Tune then retrain the first ``retrain.top_k`` architectures (best first); results in input order.

    Each architecture works in ``<storage>/arch-<digest>``, the digest of its string,
    the retrain settings, the data limits and ``tuned``, so a rerun with the same storage
    and settings skips finished architectures (their ``result.json``), reuses finished
    tunings and resumes an interrupted training, while changed settings start afresh.
    All results are also written to ``<storage>/results.json``. Without ``tuned`` the
    final training uses :func:`untuned_hyperparameters`. With a run's ``clock``, each
    final training keeps to :func:`training_minutes`.
    """
    validate_archs(archs, data_path)
    chosen = archs[:config.retrain.top_k]
    if len(chosen) < len(archs):
        logger.info("retraining the first %d of %d architectures (retrain.top_k)", len(chosen), len(archs))
    storage = Path(storage).resolve()
    results = []
    for index, arch in enumerate(chosen):
        key = _settings_key(arch, config) | ({} if tuned else {"tuned": False})  # tuned dirs keep their old digest
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()
        arch_dir = storage / f"arch-{digest[:12]}"
        record = arch_dir / "result.json"
        if record.exists():
            logger.info("%s is already retrained; reusing %s", arch.encode(), record)
            results.append(RetrainResult.from_dict(json.loads(record.read_text())))
            continue
        tuning = tune_hyperparameters(arch, config, data_path, arch_dir) if tuned else None
        minutes = training_minutes(config, clock, arch_dir, len(chosen) - index)
        result = retrain(arch, untuned_hyperparameters(config) if tuning is None else tuning.best, config, data_path,
                         arch_dir, minutes)
        if tuning is not None:
            result.tuning = tuning.to_dict()
        write_json(record, result.to_dict())
        results.append(result)
    write_json(storage / "results.json", [r.to_dict() for r in results])
    return results


def training_minutes(config: Config, clock: RunClock | None, arch_dir: Path, trainings_left: int) -> float | None:
    """A final training's budget: ``retrain.minutes``, or less when the run's ``wall_time_minutes`` leaves less.

    What the run's clock leaves, less :data:`AFTER_TRAINING_MINUTES` and the tunings still to
    come, is shared by the ``trainings_left`` trainings (this one included). Decided once
    per training and kept in ``<arch_dir>/budget.json``, so a resumed training keeps its plan
    (its own seconds are in its checkpoint); a changed ``wall_time_minutes`` decides anew.
    """
    own = config.retrain.minutes
    if clock is None or clock.budget_minutes is None:
        return own
    record = arch_dir / "budget.json"
    try:
        saved = json.loads(record.read_text())
        if saved["wall_time_minutes"] == clock.budget_minutes:
            return saved["minutes"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        pass  # none yet, or unreadable: decide (again)
    left = clock.minutes_left()
    tunings = (trainings_left - 1) * (config.retrain.tuning_minutes or 0)
    share = max(0.0, (left - tunings) / trainings_left - AFTER_TRAINING_MINUTES)
    minutes = share if own is None else min(own, share)
    if share == 0:
        logger.warning("wall_time_minutes=%g is spent (%.1f minutes worked): the final training stops after one "
                       "epoch; raise wall_time_minutes or lower the evolution's budget", clock.budget_minutes,
                       clock.seconds() / 60)
    logger.info("final training budget: %.1f minutes (wall_time_minutes=%g leaves %.1f after %.1f minutes of the run, "
                "%d training(s) to go; retrain.minutes=%s)", minutes, clock.budget_minutes, left,
                clock.seconds() / 60, trainings_left, own)
    write_json(record, {"wall_time_minutes": clock.budget_minutes, "minutes": minutes, "run_minutes_left": left})
    return minutes


def untuned_hyperparameters(config: Config) -> Hyperparameters:
    """The centre of every configured range, geometric for the log-uniform ones (learning rate, weight decay).

    What training without tuning uses; a range collapsed to one value (``lr_range: [0.05, 0.05]``) fixes it.
    """
    settings = config.retrain
    _search_space(config)  # the log-uniform ranges must start above 0, tuned or not
    return Hyperparameters(lr=float(np.sqrt(np.prod(settings.lr_range))),
                           weight_decay=float(np.sqrt(np.prod(settings.weight_decay_range))),
                           label_smoothing=sum(settings.label_smoothing_range) / 2,
                           augmentation=sum(settings.augmentation_range) / 2)


def _recipe(config: Config) -> dict[str, Any]:
    """The retrain settings a result depends on: all but how many architectures and where they run."""
    return config.retrain.model_dump(mode="json", exclude={"top_k", "workers", "cpus_per_worker"})


def _settings_key(arch: Arch, config: Config) -> dict[str, Any]:
    """Everything a finished tuning or training depends on (not ``top_k``, not the workers or their CPUs)."""
    limits = {name: getattr(config.data, f"{name}_limit") for name in ("train", "val", "test")}
    return {"arch": arch.encode(), "retrain": _recipe(config),
            "limits": limits}


def _search_space(config: Config) -> dict[str, Any]:
    """Tune domains over the configured ranges; learning rate and weight decay are log-uniform."""
    settings = config.retrain
    for name in ("lr_range", "weight_decay_range"):
        if getattr(settings, name)[0] <= 0:
            raise ConfigError(f"retrain.{name}={list(getattr(settings, name))} is sampled log-uniformly, "
                              "so its low end must be > 0")
    return {"lr": tune.loguniform(*settings.lr_range), "weight_decay": tune.loguniform(*settings.weight_decay_range),
            "label_smoothing": tune.uniform(*settings.label_smoothing_range),
            "augmentation": tune.uniform(*settings.augmentation_range)}


def _splits(config: Config, data_path: Path, arch: Arch, *names: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The named splits (limited as the config asks, seeded), resized to the architecture's input."""
    dataset = load_dataset(data_path)
    limits = {"train": config.data.train_limit, "val": config.data.val_limit, "test": config.data.test_limit}
    pairs = (dataset.split(name, limit=limits[name], seed=config.retrain.seed) for name in names)
    return [(resize_input(x, arch.input_size), y) for x, y in pairs]


def _tuning_trial(params: dict[str, Any], *, arch: str, config: dict, data_path: str) -> None:
    """Tune trial: train in this process on 1 CPU, report validation accuracy after every epoch."""
    torch.set_num_threads(1)
    settings = Config.model_validate(config)
    model = Arch.parse(arch)
    (x, y), (x_val, y_val) = _splits(settings, Path(data_path), model, "train", "val")
    training = Training(model, Hyperparameters.from_dict(params), settings.retrain, settings.retrain.tuning_epochs,
                         steps_per_epoch(len(x), settings.retrain.batch_size))
    for _ in range(settings.retrain.tuning_epochs):
        record = training.run_epoch(x, y)
        tune.report({METRIC: evaluate(training.net, x_val, y_val), "train_loss": record["train_loss"]})


def _retrain_worker(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    """Train worker: resume, train the remaining epochs with a checkpoint after each, test; rank 0 returns."""
    rank = train.get_context().get_world_rank()
    torch.set_num_threads(loop_config["threads"])
    config = Config.model_validate(loop_config["config"])
    arch = Arch.parse(loop_config["arch"])
    hparams = Hyperparameters.from_dict(loop_config["hparams"])
    storage = Path(loop_config["storage"])
    settings = config.retrain
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = _splits(config, Path(loop_config["data_path"]), arch,
                                                                   "train", "val", "test")
    x, y = torch.cat([x_train, x_val]), torch.cat([y_train, y_val])
    training = Training(arch, hparams, settings, settings.epochs, steps_per_epoch(len(x), settings.batch_size), rank)
    run = loop_config["run"]
    checkpoint = storage / "checkpoint.pt"
    if checkpoint.exists():
        training.load_state_dict(_load_checkpoint(checkpoint, run))
    while training.epoch < training.epochs:
        training.run_epoch(x, y)
        if loop_config["minutes"] is not None:
            training.epochs = _epochs_within(loop_config["minutes"], settings.epochs, training.epochs,
                                             [record["seconds"] for record in training.history])
        if rank == 0:
            state = {"format": CHECKPOINT_FORMAT, "run": run, **training.state_dict()}
            write_atomically(checkpoint, lambda temp: torch.save(state, temp))
            if loop_config["fault_epoch"] == str(training.epoch):
                fail_once(storage / "fault-injected")
    # Precise BN: statistics of the final weights, not a running average over the last epochs' weights.
    net = training.final_net()
    recalibrate_bn(net, x[:PRECISE_BN_IMAGES])
    test_accuracy = evaluate(net, x_test, y_test)
    if rank != 0:
        return None
    write_atomically(storage / "weights.pt", lambda temp: torch.save(net.state_dict(), temp))
    return {"test_accuracy": test_accuracy, "history": training.history, "epochs": training.epochs}


def _epochs_within(minutes: float, epochs: int, planned: int, seconds: list[float]) -> int:
    """The epochs (at most ``epochs``, at least those done) that fit in ``minutes``, re-planned after every epoch.

    The pace is the median epoch after the first (the first alone until there is another):
    the first pays for warm-up and page faults, and one slow epoch should not move the plan.
    Planning once at the first epoch's pace left ~12 of 55 minutes unused in the preset run.
    The budget counts the epochs already recorded, so a resumed training keeps to it as well.
    Data-parallel ranks time their own epochs; the slowest decides, so every rank plans the same schedule.
    """
    done = len(seconds)
    pace = float(np.median(seconds[1:] if done > 1 else seconds))
    timing = torch.tensor([sum(seconds), pace], dtype=torch.float64)
    if world()[1] > 1:
        dist.all_reduce(timing, op=dist.ReduceOp.MAX)
    elapsed, pace = timing.tolist()
    fit = max(done, min(epochs, done + int((minutes * 60 - elapsed) // pace)))
    if fit != planned:
        log = logger.warning if done == 1 and fit < epochs else logger.info
        log("final training: %d of %d epochs fit in %.1f minutes at %.0f s per epoch (%d done)", fit, epochs, minutes,
            pace, done)
    return fit


def _run_key(arch: Arch, hparams: Hyperparameters, config: Config) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (the worker count may change)."""
    return {"arch": arch.encode(), "hparams": hparams.to_dict(),
            "retrain": _recipe(config),
            "train_limit": config.data.train_limit, "val_limit": config.data.val_limit}


def _load_checkpoint(path: Path, run: dict[str, Any]) -> dict[str, Any]:
    return read_checkpoint(path, "retrain", "train from scratch",
                           lambda state: state.get("format") == CHECKPOINT_FORMAT and state.get("run") == run,
                           lambda state: f"belongs to another architecture or settings ({state.get('run')}); "
                                         "delete it or use a fresh storage directory")
