"""The text a finished run prints: generations, Pareto front, best architecture, deployed models, where things are.

Every table fits :data:`~pipeline.tables.TABLE_WIDTH` columns with short arch ids;
``wide`` puts the full arch strings in the tables instead (``summary.json`` always
has them).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.placement import format_nodes
from pipeline.tables import arch_label, format_table, human
from spaces.budget import measured_latency

__all__ = ["experiment_page", "format_deploy", "format_generations", "format_run_summary", "format_status", "fmt"]


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def experiment_page(experiment_id: str, server: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI address of the experiment's training runs.

    MLflow 3.17's UI picks its view from a workflow switch (GenAI by default, kept in
    the browser) before the experiment's ``mlflow.experimentKind`` tag;
    ``workflowType=machine_learning`` in the address opens the runs whatever the switch says.
    """
    return f"{server}/#/experiments/{experiment_id}?workflowType=machine_learning"


def _resolution(arch: str) -> str:
    """``input=1x24 ...`` -> ``24px``: the one structural fact worth a column beside the id."""
    for token in arch.split():
        if token.startswith("input="):
            return token.rsplit("x", 1)[-1] + "px"
    return "-"


def format_generations(summary: dict[str, Any], wide: bool = False) -> str:
    return format_table(["generation", "best reward", "± s.e.", "mean reward", "best arch"],
                        [[g["generation"], fmt(g["best_reward"]), fmt(g.get("best_reward_se")), fmt(g["mean_reward"]),
                          arch_label(g["champion"], wide)] for g in summary["generations"]])


def _format_front(summary: dict[str, Any], wide: bool) -> str:
    """The front in ``summary.json``'s order; ``#`` is the N of ``autospace train RUN_DIR:N``."""
    rows = [[n, arch_label(p["arch"], wide), _resolution(p["arch"]), human(p["madds"]), human(p["params"]),
             fmt(p.get("predicted_latency_ms")), f"{p['val_accuracy']:.4f}",
             "final" if p.get("final") else f"gen {p.get('generation', '-')}"]
            for n, p in enumerate(summary["pareto_front"])]
    return format_table(["#", "Pareto front", "input", "MAdds", "params", "predicted ms", "val acc", "from"], rows)


def format_deploy(deploy: dict[str, Any] | None, wide: bool = False) -> str:
    """The retrained, exported, registered models and each one's promotion decision ("" when none)."""
    models = (deploy or {}).get("models", [])
    if not models:
        return ""
    rows = []
    for m in models:
        latency = m.get("export", {}).get("latency_ms", {})
        rows.append([arch_label(m["arch"], wide), fmt(m.get("retrain", {}).get("test_accuracy")),
                     fmt(measured_latency(latency, "torch")), fmt(m.get("predicted_latency_ms")),
                     fmt(measured_latency(latency, "onnxruntime")), f"v{m['version']}" if m.get("version") else "-",
                     m.get("promotion", {}).get("decision", "-")])
    return format_table(["retrained model", "test acc", "torch ms", "predicted ms", "ONNX ms", "version",
                         "promotion"], rows) + "\n(latency: milliseconds at batch 1)"


def format_run_summary(summary: dict[str, Any], out_dir: Path, wide: bool = False) -> str:
    """Everything ``autospace run`` / ``resume`` prints at the end, as one block of text."""
    best = summary["best"]
    parts = [format_generations(summary, wide), "", _format_front(summary, wide),
             f"(retrain one of them: autospace train {out_dir}:#)", "",
             f"best arch {arch_label(best['arch'], wide)}: val acc {best['val_accuracy']:.4f}, "
             f"{human(best['madds'])} MAdds, {human(best['params'])} params, reward {best['reward']:.4f} "
             f"({best['from']})"]
    deployed = format_deploy(summary.get("deploy"), wide)
    if deployed:
        parts += ["", deployed]
    mlflow = summary["mlflow"]
    parts += ["", f"run directory: {out_dir}",
              "  report.html, summary.json (full arch strings), pareto.png" if not wide else
              "  report.html, summary.json, pareto.png",
              f"mlflow run {mlflow['run_id']} in {mlflow['tracking_uri']}",
              f"  in `mlflow ui`: {experiment_page(mlflow['experiment_id'])}"]
    return "\n".join(parts)



def format_status(out_dir: Path, info: dict[str, Any], generations: int, wide: bool = False,
                  budget_minutes: float | None = None) -> str:
    """``autospace status``: one ``key  value`` line each, so a long run path or arch string stays on its line."""
    live = info["status"]
    total = live.get("generations", generations)
    phase = "finished" if info["finished"] else live.get("phase", "not started")
    trials = live.get("running_trials", 0)
    driver = live.get("driver") or {}
    if live.get("phase") == "failed":
        phase, trials = f"failed: {live.get('error', 'no error recorded')}; after fixing it: autospace resume " \
                        f"{out_dir}", 0
    elif info.get("running") is False and not info["finished"]:  # the file still says what the dead run did
        seen = datetime.fromtimestamp(info["last_seen"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        phase = f"not running (last seen {seen}, was: {phase}); continue: autospace resume {out_dir}"
        trials = 0
    elif info.get("running") is None and driver and not info["finished"]:
        phase += f" (on {driver.get('host')}, process {driver.get('pid')}: not checked from here)"
    lines = {"run": str(out_dir), "phase": phase,
             "generations done": f"{info['generations_done']}/{total}",
             "trials running": str(trials),
             "best reward": fmt(info["best_reward"]),
             "best arch": arch_label(info["best_arch"], wide)
             + ("" if wide or not info["best_arch"] else "  (full string: --wide or --json)")}
    if info.get("worked_seconds") is not None:  # the run's clock, saved at each status change
        budget = "" if budget_minutes is None else f" of wall_time_minutes {budget_minutes:g}"
        lines["time worked"] = f"{info['worked_seconds'] / 60:.1f} min{budget} (resumes count only work)"
    if info.get("nodes"):  # the Ray nodes the searches' workers ran on
        lines["nodes"] = format_nodes(info["nodes"])
    champion = info.get("registry_champion")
    if champion is not None:  # the registry's alias, not the evolution's best: they often differ
        lines["registry champion"] = (
            f"{champion['name']} v{champion['version']} ({champion['decision']} {champion['time']})"
            if champion["version"] else "none: no version passed the promotion rule (see autospace promote)")
    return "\n".join(f"{key:<19}{value}" for key, value in lines.items())
