"""Where a run's work went: the Ray nodes each trial's Train workers ran on, read back from the run directory.

Rank 0 of the worker group that searches a space appends one line per attempt
(the group taking the space up) to ``space-<i>/placements.jsonl``
(:mod:`pipeline.ray_eval`): a JSON list with one ``{"node_id", "host", "ip",
"pid"}`` per rank, in rank order (the process ids tell worker groups apart: a
slot's group searches space after space). The evaluation keeps the lines of its
own attempts as ``SpaceEvaluation.placements`` (the last one is the
attempt that produced the result); this module turns them into MLflow tags and
the run's ``nodes`` summary. No Ray here, so ``autospace status`` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

__all__ = ["PLACEMENTS", "format_nodes", "node_summary", "node_tags", "read_placements", "run_nodes"]

PLACEMENTS = "placements.jsonl"  # in each space-<i> directory, one line per attempt
Placement = list[dict[str, Any]]  # one worker group: where each rank ran, rank order


def read_placements(space_dir: Path) -> list[Placement]:
    """Every attempt recorded in ``space_dir``, oldest first (none if nothing ran yet)."""
    path = space_dir / PLACEMENTS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def node_tags(placements: list[Placement]) -> dict[str, str]:
    """MLflow tags (without the ``autospace.`` prefix) saying where a trial ran; {} if it never started.

    ``node_id``, ``node_host`` and ``node_ip`` are rank 0's in the attempt that
    produced the result; ``worker_nodes`` are that attempt's distinct nodes; with
    retries, ``attempt_nodes`` lists rank 0's node of every attempt, oldest first.
    """
    if not placements:
        return {}
    last = placements[-1]
    tags = {"node_id": last[0]["node_id"], "node_host": last[0]["host"], "node_ip": last[0]["ip"],
            "worker_nodes": ",".join(dict.fromkeys(w["node_id"] for w in last))}
    if len(placements) > 1:
        tags["attempt_nodes"] = ",".join(p[0]["node_id"] for p in placements)
    return tags


def node_summary(evaluations: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per node, in order of first use: ``trials`` whose result came from a worker group with a worker
    there, and ``attempts``, every attempt by a worker group with a worker there (more attempts than trials:
    work lost or failed on that node and was retried)."""
    nodes: dict[str, dict[str, Any]] = {}
    for evaluation in evaluations:
        placements = evaluation.get("placements") or []
        for number, placement in enumerate(placements, 1):
            for worker in {w["node_id"]: w for w in placement}.values():
                node = nodes.setdefault(worker["node_id"], {"node_id": worker["node_id"], "host": worker["host"],
                                                            "ip": worker["ip"], "trials": 0, "attempts": 0})
                node["attempts"] += 1
                node["trials"] += number == len(placements) and bool(evaluation.get("ok"))
    return list(nodes.values())


def run_nodes(run_dir: Path) -> list[dict[str, Any]]:
    """:func:`node_summary` of every search of a run: each generation's and the final one's ``results.json``."""
    files = sorted((run_dir / "generations").glob("gen-*/results.json"),
                   key=lambda p: int(p.parent.name.removeprefix("gen-")))
    files.append(run_dir / "final" / "results.json")
    evaluations: list[dict[str, Any]] = []
    for path in files:
        try:
            records = json.loads(path.read_text())
        except (OSError, ValueError):  # not written yet, or broken: status shows what it can
            continue
        evaluations += [e for e in records if isinstance(e, dict)] if isinstance(records, list) else []
    return node_summary(evaluations)


def format_nodes(nodes: list[dict[str, Any]]) -> str:
    """One line: ``2: 1a2b3c4d host (ip) 3 trials; 5e6f7a8b host (ip) 1 trial, 2 attempts``."""
    parts = []
    for node in nodes:
        part = f"{node['node_id'][:8]} {node['host']} ({node['ip']}) {node['trials']} " \
               f"trial{'' if node['trials'] == 1 else 's'}"
        if node["attempts"] != node["trials"]:
            part += f", {node['attempts']} attempts"
        parts.append(part)
    return f"{len(nodes)}: " + "; ".join(parts)
