"""The import contract of ../shared/DESIGN.md section 2, read from every module's source (AST).

Imports flow one way: ``evolve -> spaces``; ``pipeline -> evolve, spaces``;
``deploy -> spaces`` and pipeline's base modules, which never import ``deploy``;
only the top layer (the CLI) imports ``deploy``. ``spaces`` and ``evolve`` never
import Ray or MLflow. Imports inside functions count too: a lazy import is still
a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("spaces", "evolve", "pipeline", "deploy")
RAY_AND_MLFLOW = ("ray", "mlflow")
# pipeline modules deploy may build on; they import no other pipeline module, so no cycle can close through them
PIPELINE_BASE = ("pipeline.config", "pipeline.data", "pipeline.tracking", "pipeline.cluster", "pipeline.run_dir",
                 "pipeline.relocate", "pipeline.driver", "pipeline.placement", "pipeline.run_clock")
# the CLI: the only pipeline modules that may import deploy (they wire the deploy stage and its commands in)
PIPELINE_TOP = ("pipeline.cli", "pipeline.run_cli", "pipeline.train_cli")


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(module: str, source: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` imports, anywhere in it; ``from a import b`` counts as ``a`` and ``a.b``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[:len(package) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def violations(module: str, imports: set[str]) -> list[str]:
    """The imports of ``module`` that break the contract, each with the rule it breaks."""
    rules: list[tuple[tuple[str, ...], str]] = []
    if _within(module, ("spaces",)):
        rules += [(RAY_AND_MLFLOW + ("evolve", "pipeline", "deploy"), "spaces is the bottom layer (torch only)")]
    elif _within(module, ("evolve",)):
        rules += [(RAY_AND_MLFLOW + ("pipeline", "deploy"), "evolve is pure: no Ray, MLflow, pipeline or deploy")]
    elif _within(module, PIPELINE_BASE):
        rules += [(("deploy",), "pipeline's base modules never import deploy")]
    elif _within(module, ("pipeline",)) and not _within(module, PIPELINE_TOP):
        rules += [(("deploy",), f"only the top layer {PIPELINE_TOP} imports deploy")]
    found: dict[str, str] = {name: why for prefixes, why in rules for name in imports if _within(name, prefixes)}
    if _within(module, ("deploy",)) or _within(module, PIPELINE_BASE):
        found.update({name: f"deploy and pipeline's base modules use only the base {PIPELINE_BASE}"
                      for name in imports if _within(name, ("pipeline",)) and not _within(name, PIPELINE_BASE)
                      and name != "pipeline"})
    # `from a.b import c` yields a.b and a.b.c: report the module, not each name taken from it
    return [f"{module} imports {name}: {why}" for name, why in sorted(found.items())
            if name.rpartition(".")[0] not in found]


def _project_modules() -> list[tuple[str, Path]]:
    return sorted((_module_name(path), path) for package in PACKAGES for path in (REPO / package).rglob("*.py"))


def test_every_package_module_keeps_the_import_contract() -> None:
    modules = _project_modules()
    assert len(modules) > 50  # the walk found the tree
    broken = [line for name, path in modules
              for line in violations(name, imported_modules(name, path.read_text(), path.name == "__init__.py"))]
    assert broken == []


def test_every_base_module_named_in_the_contract_exists() -> None:
    names = {name for name, _ in _project_modules()}
    assert set(PIPELINE_BASE + PIPELINE_TOP) <= names


@pytest.mark.parametrize(("module", "source", "broken"), [
    ("spaces.latency", "import ray", "spaces.latency imports ray: spaces is the bottom layer (torch only)"),
    ("spaces.search", "def f():\n    from mlflow import MlflowClient\n", "spaces.search imports mlflow"),
    ("evolve.loop", "from pipeline.config import Config", "evolve.loop imports pipeline.config: evolve is pure"),
    ("pipeline.evolution_run", "from deploy.stage import deploy_run", "only the top layer"),
    ("pipeline.run_dir", "import deploy.schedule", "pipeline's base modules never import deploy"),
    ("pipeline.cluster", "from pipeline import ray_eval", "pipeline.cluster imports pipeline.ray_eval"),
    ("deploy.retrain", "from pipeline.ray_eval import evaluate_spaces", "deploy.retrain imports pipeline.ray_eval"),
    ("pipeline.data.store", "from ...deploy import stage", "pipeline.data.store imports deploy"),
])
def test_a_forbidden_import_is_reported_with_its_rule(module: str, source: str, broken: str) -> None:
    found = violations(module, imported_modules(module, source))
    assert any(broken in line for line in found), found


@pytest.mark.parametrize(("module", "source"), [
    ("pipeline.cli", "from deploy import cli as deploy_cli"),
    ("pipeline.run_cli", "def f():\n    from deploy.stage import deploy_run\n"),
    ("deploy.stage", "from pipeline.data import load_dataset\nfrom pipeline.tracking import Tracker"),
    ("pipeline.evolution_run", "import ray\nfrom pipeline.ray_eval import evaluate_spaces"),
    ("evolve.loop", "from spaces.atomic import write_text_atomically"),
])
def test_allowed_imports_pass(module: str, source: str) -> None:
    assert violations(module, imported_modules(module, source)) == []
