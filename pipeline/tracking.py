"""MLflow tracking of a pipeline run: one parent run, nested runs per generation and per space.

By default a SQLite store (``<out_dir>/mlflow.db``) with artifacts under
``<out_dir>/mlartifacts``; ``mlflow.tracking_uri`` points at a server instead.
Everything goes through an explicit :class:`mlflow.MlflowClient` and run ids,
so logging works the same from the CLI process and from a Ray actor, and it
is idempotent: a generation already logged (found by its tags) is never logged
twice, which is what makes ``autospace resume`` exactly-once in MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from pipeline.config import Config
from pipeline.placement import Placement, node_tags
from spaces.search import SearchResult

__all__ = ["Tracker", "tracking_uri"]

PARENT_TAG = "mlflow.parentRunId"
NAME_TAG = "mlflow.runName"
# MLflow 3's UI opens an experiment by its kind; untagged, it guesses and shows the GenAI overview ("Traces 0")
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
# per-epoch search records logged as metric histories (step = epoch) on each space's run
CURVES = ("train_loss", "arch_loss", "expected_madds", "expected_params", "expected_latency_ms", "entropy", "tau")
_BATCH = 1000  # MLflow's most metrics per log_batch
ERROR_TAG = "autospace.error"


def tracking_uri(config: Config) -> str:
    """The configured URI, or the run directory's SQLite store."""
    if config.mlflow.tracking_uri:
        return config.mlflow.tracking_uri
    return f"sqlite:///{(config.out_dir / 'mlflow.db').resolve()}"


def _flatten(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(_flatten(f"{prefix}.{key}" if prefix else str(key), item))
        return out
    return {prefix: str(value)[:500]}


class Tracker:
    """The MLflow side of one pipeline run (parent run id persisted by the caller)."""

    def __init__(self, config: Config, parent_run_id: str | None = None) -> None:
        self.uri = tracking_uri(config)
        self.client = MlflowClient(self.uri)
        experiment = self.client.get_experiment_by_name(config.mlflow.experiment)
        if experiment is None:
            location = None if config.mlflow.tracking_uri else (config.out_dir / "mlartifacts").resolve().as_uri()
            try:
                self.experiment_id = self.client.create_experiment(config.mlflow.experiment,
                                                                   artifact_location=location, tags={KIND_TAG: KIND})
            except MlflowException as err:  # another run on the same server created it since: use that one
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = self.client.get_experiment_by_name(config.mlflow.experiment)
        if experiment is not None:
            self.experiment_id = experiment.experiment_id
            if KIND_TAG not in experiment.tags:  # an experiment made elsewhere: a kind set there is kept
                self.client.set_experiment_tag(self.experiment_id, KIND_TAG, KIND)
        if parent_run_id is None:
            run = self.client.create_run(self.experiment_id, tags={NAME_TAG: config.out_dir.name,
                                                                   "autospace.kind": "pipeline"})
            parent_run_id = run.info.run_id
            self.client.log_batch(parent_run_id, params=[Param(k, v) for k, v in
                                                         _flatten("", config.model_dump(mode="json")).items()])
        elif self.client.get_run(parent_run_id).info.status == "FAILED":  # resumed after a failure: open again
            self.client.delete_tag(parent_run_id, ERROR_TAG)
            self.client.update_run(parent_run_id, status="RUNNING")
        self.parent_run_id = parent_run_id

    # ---- nested runs ------------------------------------------------------------------------
    def child_runs(self, kind: str, **tags: Any) -> list[Any]:
        """Finished child runs of this pipeline run with the given kind and tags."""
        return [r for r in self._children(kind, tags) if r.info.status == "FINISHED"]

    def _children(self, kind: str, tags: dict[str, Any]) -> list[Any]:
        query = [f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'", f"tags.`autospace.kind` = '{kind}'"]
        query += [f"tags.`autospace.{k}` = '{v}'" for k, v in tags.items()]
        return self.client.search_runs([self.experiment_id], " and ".join(query), max_results=1000)

    def resume_child(self, kind: str, tags: dict[str, Any], name: str) -> str:
        """The child run of this kind and tags, whatever its status, or a new one: one run per step.

        A step killed after starting its run (see :mod:`deploy.stage`) goes on in that run on resume.
        """
        found = self._children(kind, tags)
        return found[0].info.run_id if found else self.start_child(kind, tags, name)

    def start_child(self, kind: str, tags: dict[str, Any], name: str, parent: str | None = None) -> str:
        """A nested run (under ``parent``, default the pipeline run) tagged ``autospace.kind``."""
        parent = parent or self.parent_run_id
        all_tags = {PARENT_TAG: parent, NAME_TAG: name, "autospace.kind": kind,
                    **{f"autospace.{k}": str(v) for k, v in tags.items()}}
        return self.client.create_run(self.experiment_id, tags=all_tags).info.run_id

    def log_generation(self, report: dict[str, Any], spaces: list[dict[str, Any]],
                       results: list[SearchResult | None], state: dict[str, Any],
                       placements: list[list[Placement]] | None = None) -> bool:
        """One nested run for the generation, one per candidate space under it; False if already logged.

        ``placements`` (per space, its evaluation's) tag each space's run with the Ray
        node and host its workers ran on (:func:`pipeline.placement.node_tags`).
        """
        generation = report["generation"]
        if self.child_runs("generation", generation=generation):
            return False
        run_id = self.start_child("generation", {"generation": generation}, f"generation-{generation}")
        metrics = {k: report[k] for k in ("best_reward", "best_reward_se", "mean_reward", "failed_spaces",
                                          "wall_seconds") if report.get(k) is not None}
        self._log_metrics(run_id, metrics)
        self.client.log_dict(run_id, report, "report.json")
        self.client.log_dict(run_id, state, "population_state.json")
        for index, (space, result, entry) in enumerate(zip(spaces, results, report["spaces"])):
            where = node_tags(placements[index]) if placements else {}
            space_run = self.start_child("space", {"generation": generation, "space": index, **where},
                                         f"g{generation}-space-{index}", parent=run_id)
            space_metrics = {"log10_cardinality": entry["log10_cardinality"]}
            if result is not None:
                optional = {"predicted_latency_ms": result.predicted_latency_ms,
                            "expected_latency_ms": result.expected_latency_ms,
                            "expected_madds": result.expected_madds, "expected_params": result.expected_params}
                space_metrics |= {"reward": entry["reward"], "reward_se": entry.get("reward_se"),
                                  "val_accuracy": result.val_accuracy,
                                  "madds": result.cost.madds, "params": result.cost.params,
                                  "search_wall_seconds": result.wall_seconds,
                                  "warm_started_modules": result.warm_started}
                space_metrics |= {k: v for k, v in optional.items() if v is not None}
                if result.entropy:
                    space_metrics["choice_entropy"] = result.entropy["mean"]
                data = result.to_dict()
                self.client.set_tag(space_run, "autospace.arch", data["arch"])
                self.client.log_dict(space_run, {"arch": data["arch"], "choice": data["choice"]}, "derived_arch.json")
                self.client.log_dict(space_run, {"probabilities": data["probabilities"],
                                                 "cell_effects": data["cell_effects"]}, "cell_scores.json")
                self._log_curves(space_run, result.history)
            self._log_metrics(space_run, space_metrics)
            self.client.log_dict(space_run, space, "space.json")
            self.client.set_terminated(space_run, "FINISHED" if result is not None else "FAILED")
        # The generation run is FINISHED last: it is the marker that this generation is fully logged.
        self.client.set_terminated(run_id, "FINISHED")
        self._log_metrics(self.parent_run_id, {"best_reward": report["best_reward"]} if report["best_reward"]
                          is not None else {}, step=generation)
        return True

    def _log_metrics(self, run_id: str, metrics: dict[str, float | None], step: int = 0) -> None:
        """Log the metrics that have a value (a report of an older run may lack some)."""
        given = [Metric(k, float(v), 0, step) for k, v in metrics.items() if v is not None]
        if given:
            self.client.log_batch(run_id, metrics=given)

    def _log_curves(self, run_id: str, history: list[dict[str, Any]]) -> None:
        """The search's per-epoch records as ``search_<name>`` metric histories, step = epoch."""
        metrics = [Metric(f"search_{key}", float(record[key]), 0, record["epoch"])
                   for record in history for key in CURVES if record.get(key) is not None]
        for start in range(0, len(metrics), _BATCH):
            self.client.log_batch(run_id, metrics=metrics[start:start + _BATCH])

    def log_summary(self, summary: dict[str, Any], files: list[Path]) -> None:
        """Final metrics, the summary and the plots on the parent run."""
        best = summary["best"]
        self._log_metrics(self.parent_run_id, {"final_val_accuracy": best["val_accuracy"],
                                               "final_madds": best["madds"], "final_params": best["params"]})
        self.client.set_tag(self.parent_run_id, "autospace.best_arch", best["arch"])
        self.client.log_dict(self.parent_run_id, summary, "summary.json")
        for path in files:
            self.client.log_artifact(self.parent_run_id, str(path))

    def log_report(self, path: Path) -> None:
        """The run's ``report.html`` on the parent run; logging it again replaces the earlier copy."""
        self.client.log_artifact(self.parent_run_id, str(path))

    def fail(self, error: str) -> None:
        """Mark the pipeline run FAILED with why (tag ``autospace.error``); resuming the run reopens it."""
        self.client.set_tag(self.parent_run_id, ERROR_TAG, error[:5000])
        self.client.set_terminated(self.parent_run_id, "FAILED")

    def finish(self, deployed: dict[str, Any] | None = None) -> None:
        """Close the pipeline run (after the deploy stage, whose record it keeps)."""
        if deployed is not None:
            self.client.log_dict(self.parent_run_id, deployed, "deploy.json")
        self.client.set_terminated(self.parent_run_id, "FINISHED")
