"""``autospace report RUN_DIR``: the run as one self-contained ``report.html``.

Sections: the run; best/mean reward per generation (with the range of its
spaces); per searchable layer a heat map of cell fitness over the generations
with the cells added and dropped; accuracy vs cost of every derived
architecture coloured by generation, with the Pareto front and the budget; the
best architecture as a block diagram; predicted vs measured latency and the
registry's decisions where the deploy stage ran; every architecture by id.
Inline CSS and SVG only, so the file opens offline, from an MLflow artifact
view or an e-mail attachment. The runner rewrites it after every generation,
the final search and the deploy stage, and logs it to the MLflow parent run.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.run_report.page import render_page
from pipeline.run_report.records import read_records
from spaces.atomic import write_text_atomically

__all__ = ["REPORT_NAME", "write_report"]

REPORT_NAME = "report.html"


def write_report(root: Path, out: Path | None = None) -> Path:
    """Write the report of the run in ``root`` to ``out`` (default ``root/report.html``), atomically."""
    path = out if out is not None else root / REPORT_NAME
    write_text_atomically(path, render_page(read_records(root)))
    return path
