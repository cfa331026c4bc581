"""Config: defaults, the documented example, overrides, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import Config, ConfigError, apply_overrides, load_config
from pipeline.evolution_run import evolution_settings

REPO = Path(__file__).resolve().parents[2]


def _leaf_fields(model: type, prefix: str = "") -> set[str]:
    fields = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            fields |= _leaf_fields(annotation, f"{prefix}{name}.")
        else:
            fields.add(prefix + name)
    return fields


def _leaf_keys(raw: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in raw.items():
        keys |= _leaf_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return keys


def test_example_config_documents_every_field_with_its_default() -> None:
    path = REPO / "configs" / "example.yaml"
    assert _leaf_keys(yaml.safe_load(path.read_text())) == _leaf_fields(Config)
    assert load_config(path) == load_config(None)


def test_quickstart_config_is_valid() -> None:
    config = load_config(REPO / "configs" / "quickstart.yaml")
    assert config.out_dir == Path("runs/quickstart")
    assert config.space.file == REPO / "configs" / "quickstart_space.yaml"  # relative to the config file
    assert config.space.file.exists()


def test_overrides_are_parsed_as_yaml_and_validated() -> None:
    config = load_config(None, ["search.epochs=7", "budget.metric=params", "data.train_limit=null"])
    assert config.search.epochs == 7 and config.budget.metric == "params" and config.data.train_limit is None
    assert apply_overrides({"a": {"b": 1}}, ["a.c=[1, 2]"]) == {"a": {"b": 1, "c": [1, 2]}}


@pytest.mark.parametrize("gradient, learns", [("straight_through", False), ("hybrid", True), ("reinforce", True)])
def test_the_evolution_uses_the_learned_resolution_only_where_the_accuracy_reaches_it(gradient: str,
                                                                                       learns: bool) -> None:
    config = load_config(None, [f"search.arch_gradient={gradient}", "evolution.generations=2", "budget.target=2e6"])
    settings = evolution_settings(config)
    assert settings.search_learns_resolution is learns
    assert settings.generations == 2 and settings.target == 2e6
    with pytest.raises(ConfigError, match="search_learns_resolution: unknown field"):  # derived, not configured
        load_config(None, ["evolution.search_learns_resolution=true"])


@pytest.mark.parametrize("override, expected", [
    ("search.supernet=foo", r"search\.supernet: Input should be 'dmasking' or 'densenas' \(got 'foo'\)"),
    ("budget.targt=3", r"budget\.targt: unknown field"),
    ("search.epochs=0", r"search\.epochs: .*greater than or equal to 1 \(got 0\)"),
    ("search.warmup_epochs=9", r"warmup_epochs=9 must be smaller than epochs=4"),
    ("evolution.cells_per_layer=20", r"cells_per_layer=20 exceeds population_per_layer=8"),
    ("retrain.lr_range=[0.5, 0.1]", r"lr_range=\[0.5, 0.1\] must satisfy"),
    ("export.formats=[pickle]", r"export\.formats\.0: Input should be 'torchscript' or 'onnx'"),
])
def test_bad_values_name_field_value_and_allowed(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(None, [override])


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["search.supernet=foo", "budget.target=-1"])
    assert "search.supernet" in str(err.value) and "budget.target" in str(err.value)


@pytest.mark.parametrize("text, expected", [
    ("search: [1, 2", "not valid YAML"),
    ("- a\n- b", "must hold a mapping"),
])
def test_unreadable_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_missing_file_and_malformed_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(None, ["search.epochs"])


@pytest.mark.parametrize("override, expected", [
    ("evolution.population_per_layer=121", "evolution.population_per_layer: Input should be less than or equal to 120"),
    ("budget.target=.inf", "budget.target: Input should be a finite number"),
    ("search.lr=.nan", "search.lr: Input should be a finite number"),
    ("search.epochs=[1", "--set search.epochs=[1: the value is not valid YAML"),
])
def test_values_no_run_can_use_are_config_errors(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace(".", r"\.")):
        load_config(None, [override])


def test_every_config_error_is_a_user_error() -> None:
    from spaces.errors import UserError

    assert issubclass(ConfigError, UserError)
