"""How much of a finished run's search phase was orchestration, read from its run directories' files.

The searches of a run (every generation's batch and the final search) run one
batch after another, so the critical path from the first batch handed out to the
last outcome is each batch's longest search plus everything else: the slots'
start (Tune trials, Train worker groups where there are any, data loading), the
hand-over of each batch, the outcomes' return and the evolution's own work
between generations. That "rest" over the critical path is the orchestration
share. Times come from the slots' batch files (when each batch was handed out),
each space's ``outcome.json`` (when it was written) and the search's own
``wall_seconds`` (measured inside the search). Run it on runs made back to back
on one machine to compare code versions::

    PYTHONPATH=. .venv/bin/python benchmarks/run_orchestration_share.py runs/before runs/after
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.tables import format_table


def share(run_dir: Path) -> list[object]:
    """One row: the first search's start after the first batch, the critical path, the longest searches
    summed, the rest and its share."""
    batches = sorted((run_dir / "slots" / "control").glob("*/batches/*.json"))
    if not batches:
        raise SystemExit(f"{run_dir}: no batch files under slots/control/*/batches; give the directory of a "
                         "finished `autospace run`")
    handed = [path.stat().st_mtime for path in batches]
    searched, last_outcome, first_start = 0.0, 0.0, None
    for path in batches:
        storage = Path(json.loads(path.read_text())["storage"])
        outcomes = [(p.stat().st_mtime, outcome) for p in sorted(storage.glob("space-*/outcome.json"))
                    if (outcome := json.loads(p.read_text()))["result"] is not None]  # failed searches have no time
        if not outcomes:
            raise SystemExit(f"{run_dir}: no search of the batch {path.name} ({storage}) succeeded")
        searched += max(o["result"]["wall_seconds"] for _, o in outcomes)
        last_outcome = max(last_outcome, *(t for t, _ in outcomes))
        if first_start is None:
            first_start = min(t - o["result"]["wall_seconds"] for t, o in outcomes) - handed[0]
    path_seconds = last_outcome - handed[0]
    rest = path_seconds - searched
    return [run_dir.name, f"{first_start:.1f}", f"{path_seconds:.1f}", f"{searched:.1f}",
            f"{rest:.1f}", f"{100 * rest / path_seconds:.1f}%"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run directories of finished runs")
    args = parser.parse_args()
    print(format_table(["run", "first search starts", "first batch to last outcome",
                        "longest search per batch, summed", "the rest", "share"],
                       [share(run) for run in args.runs]))


if __name__ == "__main__":
    main()
