"""Property-based: random YAML files and ``--set`` values give a Config or a ConfigError, never anything else.

Documents are built from the config's real section and field names with random
values (so that many reach pydantic's validation of one field), mixed with
arbitrary keys, nesting and raw text.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import Config, load_config
from spaces.errors import UserError

PROPERTY = settings(max_examples=200, deadline=None)

SECTIONS = {name: list(field.annotation.model_fields) for name, field in Config.model_fields.items()
            if hasattr(field.annotation, "model_fields")}
DOTTED = [f"{section}.{key}" for section, keys in SECTIONS.items() for key in keys] + ["out_dir"]

scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                   st.text(max_size=12), st.sampled_from(["madds", "latency", "onnx", "auto", "~/x", "-1", "1e-3"]))
value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                     max_leaves=6)


@st.composite
def documents(draw: st.DrawFn) -> object:
    """A mapping of real sections to mappings of real (and some made-up) fields, or any value at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(value)
    doc: dict = {}
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "out_dir", "extra"]), max_size=4, unique=True)):
        if section not in SECTIONS or draw(st.integers(0, 9)) == 0:
            doc[section] = draw(value)
            continue
        keys = draw(st.lists(st.sampled_from([*SECTIONS[section], "typo"]), max_size=3, unique=True))
        doc[section] = {key: draw(value) for key in keys}
    return doc


def _load(path: Path | None, overrides: list[str] | None = None) -> None:
    try:
        config = load_config(path, overrides)
    except UserError as err:
        assert str(err).strip(), "an error without a message"
        return
    assert isinstance(config, Config)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config") / "config.yaml"


@PROPERTY
@given(doc=documents())
def test_random_yaml_documents_load_or_are_refused(doc: object, config_file: Path) -> None:
    config_file.write_text(yaml.safe_dump(doc, allow_unicode=True))
    _load(config_file)


@PROPERTY
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_random_text_files_load_or_are_refused(text: str, config_file: Path) -> None:
    config_file.write_text(text, encoding="utf-8", errors="surrogateescape")
    _load(config_file)


@PROPERTY
@given(overrides=st.lists(st.tuples(st.one_of(st.sampled_from(DOTTED), st.text(max_size=12)),
                                    st.one_of(value.map(lambda v: yaml.safe_dump(v).strip()), st.text(max_size=20)),
                                    st.sampled_from(["=", "=", ":", ""])).map(lambda kvs: kvs[0] + kvs[2] + kvs[1]),
                          max_size=3))
def test_random_overrides_apply_or_are_refused(overrides: list[str]) -> None:
    _load(None, overrides)
