"""``autospace run`` / ``resume``: the AutoSpace evolution on Ray, tracked in MLflow, resumable.

A Ray actor (:class:`EvolutionRunner`, no CPUs of its own, on the head node) drives
:meth:`evolve.loop.Evolution.run` through its hooks. Each generation the evolution
proposes candidate spaces; the runner's evaluator scores them in its search
slots (Ray Tune trials whose Ray Train worker groups run data-parallel supernet
searches, started once for the whole evolution and the final search, see
:mod:`pipeline.ray_eval`; started before the runner's tracking and first
generation are set up, so that their start overlaps them) and returns their typed :class:`~spaces.search.SearchResult`;
the evolution folds them into the populations and scores the spaces; the runner
merges the weight pool, the evolution saves its state, and the runner logs the
generation to MLflow. Then a final search in the learned
space, the Pareto front and ``summary.json``, then the deploy stage. That stage
(retrain, export, register, promote) is handed in by the CLI layer as a
:class:`DeployStage` (``deploy.stage.deploy_run``): the orchestration never
imports ``deploy``, whose modules build on this package's base modules.

Run directory::

    config.yaml        the validated config the run uses (resume reads it back)
    run.json           MLflow experiment and parent run ids
    evolution.json     the population state after the last finished generation
    status.json        phase, current generation, trials in flight (for ``autospace status``)
    clock.json         seconds of work so far, across resumes (the whole run's ``wall_time_minutes``)
    generations/gen-N/ spaces.json, results.json and each space's search checkpoint, outcome and placements
    slots/             the search slots' Tune experiment, Train runs and control files (batches handed out)
    final/             the final search in the learned space (results.json: its evaluation)
    latency_table.<runtime>.json  the run's per-op latency table (budget.latency_runtime, batch 1)
    summary.json, pareto.png
    report.html        the run's report (``autospace report``), rewritten after every generation and at the end

Failures: a generation whose every search failed, a failed final search and a
search stopped by the user's input (a tampered checkpoint) stop the run before
its state moves on (:mod:`pipeline.errors`): ``status.json`` says ``failed`` with
the error, the MLflow parent run is marked FAILED, and resume retries that step.

Crash safety: the state is saved before the generation is logged, and logging
is idempotent (a generation found in MLflow is not logged again); a generation
interrupted mid-way is proposed again identically (the RNG state is saved) and
its trials resume from their search checkpoints.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Protocol

import ray
from ray.exceptions import RayTaskError

from evolve.genome import Reference
from evolve.loop import Evolution, EvolutionSettings
from pipeline.cluster import ON_HEAD, ensure_ray
from pipeline.config import Config, ConfigError
from pipeline.errors import RunFailedError, SearchInputError, cause
from pipeline.latency_table import predict_latency, table_file
from pipeline.placement import run_nodes
from pipeline.ray_eval import SearchSlots, SpaceEvaluation
from pipeline.report import pareto_front, plot_pareto
from pipeline.run_clock import RunClock
from pipeline.run_dir import (RunPaths, heartbeat, prepare_run_dir, read_status, record_driver, resume_run_dir,
                              write_json)
from pipeline.run_report import write_report
from pipeline.search_job import dataset_info, load_space, search_settings
from pipeline.tracking import Tracker
from pipeline.weight_pool import POOL_FILE, SEARCH_WEIGHTS_FILE, merge_pools
from spaces.arch import Arch
from spaces.budget import COST_FIELDS
from spaces.errors import UserError
from spaces.reference import reference_arch
from spaces.search import RESOLUTION_LEARNING_GRADIENTS, SearchResult
from spaces.space import SearchSpace

__all__ = ["DeployStage", "EvolutionRunner", "check_new_run", "check_searches", "evolution_settings", "run_pipeline"]


class DeployStage(Protocol):
    """What runs after the evolution when ``retrain.enabled``; returns the deploy record (``deploy.json``).

    ``clock`` is the run's (what is left of ``wall_time_minutes``); ``on_phase`` reports each
    step (retrain, export, register) for ``autospace status``.
    """

    def __call__(self, config: Config, summary: dict[str, Any], data_path: Path, tracker: Tracker, clock: RunClock,
                 on_phase: Callable[[str], None]) -> dict[str, Any]: ...


def evolution_settings(config: Config) -> EvolutionSettings:
    return EvolutionSettings(**config.evolution.model_dump(), metric=config.budget.metric,
                             target=config.budget.target, reward_exponent=config.budget.reward_exponent,
                             search_learns_resolution=config.search.arch_gradient in RESOLUTION_LEARNING_GRADIENTS)


def _reference(config: Config, space: SearchSpace) -> Arch:
    """The configured reference (its input and classes taken from the space), or the default one."""
    if not config.space.reference:
        return reference_arch(space.in_channels, max(space.resolutions), space.num_classes)
    arch = Arch.parse(config.space.reference)
    return replace(arch, input_size=max(space.resolutions), in_channels=space.in_channels,
                   num_classes=space.num_classes)


@ray.remote(num_cpus=0)
class EvolutionRunner:
    """Owns the evolution loop of one run directory; the CLI starts it and polls the status file."""

    def __init__(self, config_json: dict[str, Any], deploy: DeployStage) -> None:
        self.config = Config.model_validate(config_json)
        self.deploy = deploy
        self.paths = RunPaths(self.config.out_dir)
        self.table_path = table_file(self.paths.root, self.config).resolve()
        self.clock = RunClock(self.paths.root, self.config.wall_time_minutes)

    def _set_status(self, **fields: Any) -> None:
        """Status for ``autospace status``; the run's clock is saved with it (what a crash would lose)."""
        self.clock.save()
        current = read_status(self.paths.root).get("status", {})
        write_json(self.paths.status, {**current, **fields, "updated_at": time.time()})

    def run(self) -> dict[str, Any]:
        config, paths = self.config, self.paths
        data_path, info = dataset_info(config)
        searches = config.evolution.generations * config.evolution.spaces_per_generation + 1
        with SearchSlots(config, data_path, paths.slots, "searches", width=config.evolution.spaces_per_generation,
                         total=searches) as slots:
            if not paths.summary.exists():  # searches are left
                slots.start()  # their start overlaps the set-up below
            run_info = json.loads(paths.run.read_text()) if paths.run.exists() else {}
            tracker = Tracker(config, run_info.get("parent_run_id"))
            write_json(paths.run, {"experiment_id": tracker.experiment_id, "parent_run_id": tracker.parent_run_id,
                                    "tracking_uri": tracker.uri})
            try:
                return self._run(tracker, data_path, info, slots)
            except (UserError, RunFailedError) as err:
                self._set_status(phase="failed", error=str(err), running_trials=0)
                tracker.fail(str(err))
                raise

    def _run(self, tracker: Tracker, data_path: Path, info: Any, slots: SearchSlots) -> dict[str, Any]:
        config, paths = self.config, self.paths
        if paths.summary.exists():  # evolution finished earlier: only the deploy stage may be left
            return self._deploy(json.loads(paths.summary.read_text()), tracker, data_path)
        if paths.state.exists():
            evolution = Evolution.load(paths.state)
            self._log_missing_generations(evolution, tracker)
        else:
            template = load_space(config, info)
            evolution = Evolution.start(template, _reference(config, template), evolution_settings(config))
        evolution.run(partial(self._evaluate_generation, evolution, slots), checkpoint=paths.state,
                      before_checkpoint=self._merge_pool,
                      on_generation=partial(self._generation_done, evolution, tracker))
        summary = self._finish(evolution, tracker, slots)
        slots.close()  # before the deploy stage, which needs the CPUs
        return self._deploy(summary, tracker, data_path)

    def _evaluate_generation(self, evolution: Evolution, slots: SearchSlots,
                             spaces: list[SearchSpace]) -> list[SearchResult | None]:
        """The evaluator :meth:`Evolution.run` calls: this generation's searches on Ray, their records saved.

        Raises (before the state moves on) when a search stopped on the user's input or
        every search failed: :func:`check_searches`.
        """
        config, n = self.config, evolution.generation
        gen_dir = self.paths.generation(n)
        write_json(gen_dir / "spaces.json", [s.to_dict() for s in spaces])
        self._set_status(phase="evolution", generation=n, running_trials=len(spaces),
                         generations=config.evolution.generations)
        evaluations = slots.evaluate(spaces, gen_dir, self.table_path, pool=self._pool(n - 1),
                                     cell_logits=[evolution.cell_logits(s) for s in spaces])
        evaluations = self._with_predicted_latency(evaluations)
        write_json(gen_dir / "results.json", [e.to_dict() for e in evaluations])
        check_searches(evaluations, f"generation {n}", gen_dir / "results.json", self.paths.root)
        return [e.result for e in evaluations]

    def _with_predicted_latency(self, evaluations: list[SpaceEvaluation]) -> list[SpaceEvaluation]:
        results = predict_latency(self.table_path, self.config, [e.result for e in evaluations])
        return [replace(e, result=result) for e, result in zip(evaluations, results)]

    def _merge_pool(self, report: dict[str, Any]) -> None:
        """The weight pool after this generation; before the state moves on, so a crash in between re-runs the
        generation, which rewrites the same pool."""
        n = report["generation"]
        gen_dir = self.paths.generation(n)
        searched = [(gen_dir / f"space-{i}" / SEARCH_WEIGHTS_FILE, entry["reward"])
                    for i, entry in enumerate(report["spaces"]) if entry["reward"] is not None]
        bred = [(c["stage"], c["layer"], parent, mutant) for c in report["layers"]
                for mutant, parent in c["parents"].items()]
        merge_pools(self._pool(n - 1), searched, gen_dir / POOL_FILE, mutants=bred)

    def _generation_done(self, evolution: Evolution, tracker: Tracker, report: dict[str, Any]) -> None:
        """After the state is saved: MLflow, status, the report."""
        self._log_generation(report, evolution, tracker)
        self._set_status(running_trials=0, generations_done=evolution.generation)
        self._refresh_report(tracker)

    def _pool(self, generation: int) -> Path | None:
        """The weight pool after ``generation`` (what the next searches start from); None before the first."""
        path = self.paths.generation(generation) / POOL_FILE
        return path.resolve() if generation >= 0 and path.exists() else None

    def _refresh_report(self, tracker: Tracker) -> None:
        """Rewrite ``report.html`` from the run directory and log it to the parent run."""
        tracker.log_report(write_report(self.paths.root))

    def _log_missing_generations(self, evolution: Evolution, tracker: Tracker) -> None:
        """On resume: log every finished generation MLflow does not have yet (exactly once across crashes)."""
        for report in evolution.history:
            self._log_generation(report, evolution, tracker)

    def _log_generation(self, report: dict[str, Any], evolution: Evolution, tracker: Tracker) -> None:
        """Log one generation from its saved files; a generation already in MLflow is skipped."""
        gen_dir = self.paths.generation(report["generation"])
        spaces = json.loads((gen_dir / "spaces.json").read_text())
        evaluations = [SpaceEvaluation.from_dict(e) for e in json.loads((gen_dir / "results.json").read_text())]
        tracker.log_generation(report, spaces, [e.result for e in evaluations], evolution.to_dict(),
                               [e.placements for e in evaluations])

    def _finish(self, evolution: Evolution, tracker: Tracker, slots: SearchSlots) -> dict[str, Any]:
        config, paths = self.config, self.paths
        self._set_status(phase="final search", running_trials=1)
        learned = evolution.learned_space()
        write_json(paths.final / "space.json", learned.to_dict())
        final = slots.evaluate([learned], paths.final, self.table_path, pool=self._pool(evolution.generation - 1),
                               cell_logits=[evolution.cell_logits(learned)])
        final = self._with_predicted_latency(final)[0]
        write_json(paths.final / "results.json", [final.to_dict()])
        check_searches([final], "the final search", paths.final / "results.json", paths.root)
        points = evolution.derived_points(final.result)
        cost_key = COST_FIELDS[config.budget.metric]
        best = max(points, key=evolution.arch_reward)
        front = pareto_front(points, cost_key)
        plot_pareto(points, front, paths.pareto, config.budget.target, cost_key)
        summary = {
            "best": {"arch": best["arch"], "val_accuracy": best["val_accuracy"], "madds": best["madds"],
                     "params": best["params"], "predicted_latency_ms": best.get("predicted_latency_ms"),
                     "reward": evolution.arch_reward(best),
                     "from": "final search" if best.get("final") else f"generation {best['generation']}"},
            "final_search": final.result.to_dict(),
            "learned_space": learned.to_dict(),
            "generations": [{"generation": h["generation"], "best_reward": h["best_reward"],
                             "best_reward_se": h["best_reward_se"], "mean_reward": h["mean_reward"],
                             "champion": h["champion"]} for h in evolution.history],
            "pareto_front": front,
            "nodes": run_nodes(paths.root),  # where every search's workers ran (pipeline.placement)
            "mlflow": {"tracking_uri": tracker.uri, "experiment_id": tracker.experiment_id,
                       "run_id": tracker.parent_run_id},
        }
        write_json(paths.summary, summary)
        tracker.log_summary(summary, [paths.pareto, paths.state])
        self._refresh_report(tracker)
        return summary

    def _deploy(self, summary: dict[str, Any], tracker: Tracker, data_path: Path) -> dict[str, Any]:
        """Retrain -> export -> register -> promote (when enabled), then close the MLflow run."""
        deployed = None
        if self.config.retrain.enabled:
            deployed = self.deploy(self.config, summary, data_path, tracker, self.clock,
                                   on_phase=lambda phase: self._set_status(phase=phase, running_trials=0))
        self._set_status(phase="done", running_trials=0)
        self._refresh_report(tracker)  # with the registry decisions, before the MLflow run closes
        tracker.finish(deployed)
        return {**summary, "deploy": deployed}


def check_searches(evaluations: list[SpaceEvaluation], step: str, record: Path, run_dir: Path) -> None:
    """Stop the run, before its state moves on, on a search's input error or when no search of ``step`` succeeded.

    Raises:
        SearchInputError: a search stopped on the user's input (its message names the file and the fix).
        RunFailedError: no search of ``step`` succeeded; the message has the first one's cause.
    """
    for evaluation in evaluations:
        if evaluation.input_error:
            raise SearchInputError(f"{step}, space {evaluation.index}: {evaluation.error}; "
                                   f"then `autospace resume {run_dir}`")
    if evaluations and not any(e.ok for e in evaluations):
        what = f"every search of {step}" if len(evaluations) > 1 else step
        raise RunFailedError(f"{what} failed: {cause(evaluations[0].error or 'no error recorded')} "
                             f"(all errors in {record}); fix the cause, then `autospace resume {run_dir}`")


def check_new_run(config: Config) -> None:
    """Everything a new run's actor would only find out later: data, space, reference, evolution settings.

    Runs before the run directory is written and before Ray starts, so bad input
    leaves nothing behind.
    """
    _, info = dataset_info(config)
    search_settings(config)  # the budget and the search's loss can clash only together
    template = load_space(config, info)
    try:
        Reference.locate(_reference(config, template), template)
    except ValueError as err:
        raise ConfigError(f"space.reference does not fit the search space: {err}") from None


def run_pipeline(config: Config, deploy: DeployStage, resume: bool = False, poll_seconds: float = 2.0,
                 on_status: Callable[[dict[str, Any]], None] | None = None,
                 on_cluster: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Start (or resume) the run's actor and wait for its summary, polling status for progress.

    With ``resume``, ``config.out_dir`` names the run directory and the rest of the
    config is the one saved there. ``on_cluster`` gets the line saying which existing
    Ray cluster the run joined (``ray.address`` set); a run on a local Ray of its own
    says nothing.
    """
    if resume:
        config = resume_run_dir(config.out_dir)
    else:
        check_new_run(config)  # also imports the default data set, once, before any worker needs it
        config = prepare_run_dir(config)
    dataset_info(config)
    record_driver(config.out_dir)  # before Ray starts: a run that dies from here on shows as stopped
    joined = ensure_ray(config)
    if joined is not None and on_cluster is not None:
        on_cluster(joined)
    runner = EvolutionRunner.options(resources=ON_HEAD).remote(config.model_dump(mode="json"), deploy)
    done = runner.run.remote()
    while True:
        ready, _ = ray.wait([done], timeout=poll_seconds)
        if ready:
            return _result(done)
        heartbeat(config.out_dir)
        if on_status is not None:
            on_status(read_status(config.out_dir))


def _result(ref: ray.ObjectRef) -> dict[str, Any]:
    """The actor's return value; a user error or a failed run raised inside it comes out as itself.

    Ray would wrap it in its own trace; the CLI prints these as one line.
    """
    try:
        return ray.get(ref)
    except RayTaskError as err:
        if isinstance(err.cause, (UserError, RunFailedError)):
            raise err.cause from None
        raise
