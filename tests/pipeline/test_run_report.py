"""``autospace report``: its numbers against a real run's files, and the page as headless Chromium renders it.

The fixture ``tests/fixtures/quickstart-run`` is the record files (no checkpoints, weight
pools or MLflow store) of a real quick-start run: 3 generations of 2 spaces, the final
search, 2 models retrained, exported, registered and promoted.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.run_report import write_report
from pipeline.run_report.records import layer_heat, read_records
from pipeline.tables import arch_id
from spaces.arch import Arch

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "quickstart-run"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (scripts/setup.sh installs "
                                                             "the Debian chromium package where apt exists)")


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURE, tmp_path / "run"))


def test_recorded_fitness_matches_the_saved_state_and_the_layer_changes(run_dir: Path) -> None:
    records = read_records(run_dir)
    heats = layer_heat(records)
    state = records.state
    last = records.history[-1]
    assert [(h.stage, h.layer) for h in heats] == [(c["stage"], c["layer"]) for c in last["layers"]]
    compared = 0
    for heat, change in zip(heats, last["layers"]):
        saved = {c["cell"]: c for c in state["populations"][heat.stage][heat.layer]}
        for cell in change["kept"]:  # still in the population: the state holds its latest fitness
            if saved[cell]["evaluations"]:
                assert heat.fitness[cell][last["generation"]] == pytest.approx(saved[cell]["fitness"], abs=1e-12)
                compared += 1
            else:
                assert heat.fitness[cell][last["generation"]] is None
        assert heat.dropped[last["generation"]] == set(change["dropped"])
        assert heat.added[last["generation"] + 1] == set(change["added"])
        layer = (heat.stage, heat.layer)
        changes = [next(ch for ch in r["layers"] if (ch["stage"], ch["layer"]) == layer) for r in records.history]
        ever = set(changes[0]["kept"] + changes[0]["dropped"]).union(*(ch["added"] for ch in changes[:-1]))
        assert set(heat.cells) == ever  # every cell the layer's population held, each once
    assert compared >= len(heats)  # at least the reference cell of every layer was scored


class _Page(HTMLParser):
    """The elements the structure checks need, from the DOM Chromium dumps."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.svgs: list[str] = []
        self.blocks: list[str] = []
        self.heat_tables: list[tuple[str, str]] = []
        self.decisions: list[str] = []
        self.resources: list[str] = []
        self._in_decision = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a["id"] or "")
        if tag == "svg" and a.get("aria-label"):
            self.svgs.append(a["aria-label"] or "")
        if tag == "g" and a.get("class") == "block":
            self.blocks.append(a["data-kind"] or "")
        if tag == "table" and a.get("class") == "heat":
            self.heat_tables.append((a["data-stage"] or "", a["data-layer"] or ""))
        if tag == "span" and a.get("class") == "decision":
            self._in_decision = True
        for key in ("src", "href"):
            if a.get(key):
                self.resources.append(a[key] or "")

    def handle_data(self, data: str) -> None:
        if self._in_decision:
            self.decisions.append(data)
            self._in_decision = False


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", *args], capture_output=True, text=True, timeout=120)


@needs_chromium
def test_the_report_renders_in_chromium_with_every_section(run_dir: Path, tmp_path: Path) -> None:
    assert main(["report", str(run_dir)]) == 0
    report = run_dir / "report.html"
    text = report.read_text()
    assert not re.search(r"https?://(?!www\.w3\.org/)", text)  # nothing to fetch: only SVG's namespace URI
    dom = _chromium("--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr
    page = _Page()
    page.feed(dom.stdout)
    assert page.sections == ["overview", "rewards", "space-evolution", "pareto", "best-arch", "latency",
                             "registry", "archs"]
    assert page.resources == []  # no scripts, styles or images loaded from anywhere
    assert {"reward per generation", "Pareto front", "architecture diagram",
            "predicted vs measured latency"} <= set(page.svgs)
    records = read_records(run_dir)
    assert page.heat_tables == [(str(c["stage"]), str(c["layer"])) for c in records.history[0]["layers"]]
    best = Arch.parse(records.summary["best"]["arch"])
    assert len(page.blocks) == len(best.stem) + len(best.blocks) + len(best.head)
    assert page.blocks.count("MBConv") == sum(getattr(op, "has_pw", False) for op in best.blocks)
    assert page.decisions == [m["promotion"]["decision"] for m in records.deploy["models"]] == ["promoted"] * 2
    assert arch_id(records.summary["best"]["arch"]) in dom.stdout
    shot = tmp_path / "report.png"
    done = _chromium("--window-size=1100,1400", f"--screenshot={shot}", report.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1400, 1100) and pixels.std() > 10  # drawn, not a blank page


def test_a_run_in_progress_gets_a_report_that_says_what_is_missing(run_dir: Path) -> None:
    (run_dir / "summary.json").unlink()
    (run_dir / "deploy.json").unlink()
    state = json.loads((run_dir / "evolution.json").read_text())
    state["history"] = state["history"][:1]
    (run_dir / "evolution.json").write_text(json.dumps(state))
    (run_dir / "status.json").write_text(json.dumps({"phase": "evolution", "generation": 1, "running_trials": 2}))
    text = write_report(run_dir).read_text()
    assert "1 of 3" in text and "evolution" in text
    assert "No exported model with a predicted latency yet" in text and "Nothing registered yet" in text
    assert text.count('class="heat"') == len(state["history"][0]["layers"])
    assert arch_id(state["history"][0]["champion"]) in text  # the best so far, drawn before the run ends


def test_the_rewards_table_shows_the_resolutions_fitness_where_the_searches_learned_it(run_dir: Path) -> None:
    state = json.loads((run_dir / "evolution.json").read_text())
    state["history"][1]["resolution_fitness"] = {"24": 0.71, "20": -0.43}  # the fixture's run predates it
    (run_dir / "evolution.json").write_text(json.dumps(state))
    text = write_report(run_dir).read_text()
    table = text.split("resolution fitness (n·P − 1)")[1].split("</table>")[0]
    rows = re.findall(r"<tr><td>(\d)</td>(.*?)</tr>", table)
    cells = {g: re.findall(r"<td>(.*?)</td>", rest) for g, rest in rows}
    assert "20 px -0.43, 24 px +0.71" in cells["1"] and "-" in cells["0"]
    assert not any("px" in c for c in cells["0"] + cells["2"])


def test_a_run_with_no_generation_yet(run_dir: Path) -> None:
    for name in ("summary.json", "deploy.json", "evolution.json", "status.json"):
        (run_dir / name).unlink()
    text = write_report(run_dir, run_dir / "elsewhere.html").read_text()
    assert text.count("No generation has finished yet.") == 2 and "not started" in text


def test_report_of_a_directory_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


def test_the_runner_writes_the_report_and_logs_it_to_the_parent_run(tiny_dataset: Path, tmp_path: Path,
                                                                     ray_cluster: dict) -> None:
    from mlflow import MlflowClient

    from tests.pipeline.finished_run import finished_run

    run = tmp_path / "run"
    finished_run(run, tiny_dataset)
    assert main(["resume", str(run)]) == 0  # a finished evolution: only the (disabled) deploy stage and closing
    assert "AutoSpace run run" in (run / "report.html").read_text()
    info = json.loads((run / "run.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    assert "report.html" in [a.path for a in client.list_artifacts(info["parent_run_id"])]
    logged = Path(client.download_artifacts(info["parent_run_id"], "report.html", str(tmp_path)))
    assert logged.read_text() == (run / "report.html").read_text()
