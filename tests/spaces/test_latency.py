"""Latency table: keys, persistence, prediction arithmetic, onnxruntime measurement.

Timings are only checked to be sane numbers, never compared with each other: the
machine running the tests is shared and noisy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from spaces.arch import Arch
from spaces.encoding import decode_op
from spaces.latency import (
    LatencyKey,
    LatencyTable,
    LatencyTableError,
    MeasureSettings,
    MissingLatencyError,
    arch_keys,
    measure_arch_latency,
    rank_correlation,
)

TINY = "input=1x8 stem=cn_k3_c8 stages=ir_k3_e2_c8,ir_k3_e2_c8|ds_k3_s2_c16 head=cn_k1_c32,cn_k1_c24_pool classes=3"
# Forward order; the repeated block is one distinct entry counted twice.
TINY_KEYS = [
    LatencyKey("cn_k3_c8_relu", 1, 8),
    LatencyKey("ir_k3_e2_c8_relu", 8, 8),
    LatencyKey("ir_k3_e2_c8_relu", 8, 8),
    LatencyKey("ds_k3_s2_c16_relu", 8, 8),
    LatencyKey("cn_k1_c32_relu", 16, 4),
    LatencyKey("cn_k1_c24_relu_pool", 32, 1),
    LatencyKey("gap", 32, 4),
    LatencyKey("fc_24x3", 24, 1),
]
FAST = {"warmup": 1, "repeats": 3}


@pytest.fixture(scope="module")
def tiny() -> Arch:
    return Arch.parse(TINY)


@pytest.fixture(scope="module")
def filled(tiny: Arch) -> LatencyTable:
    table = LatencyTable.create(MeasureSettings("torch", **FAST))
    table.ensure(tiny)
    return table


def test_arch_keys_follow_layer_sizes_and_add_the_tail(tiny: Arch) -> None:
    assert arch_keys(tiny) == TINY_KEYS


def test_ensure_measures_exactly_the_distinct_entries(tiny: Arch) -> None:
    table = LatencyTable.create(MeasureSettings("torch", **FAST))
    added = table.ensure(tiny)
    assert added == list(dict.fromkeys(TINY_KEYS))
    assert set(table.entries) == set(TINY_KEYS)
    assert table.ensure(tiny) == []


def test_entries_are_finite_and_ops_cost_more_than_nothing(filled: LatencyTable) -> None:
    assert math.isfinite(filled.overhead_ms) and filled.overhead_ms > 0
    for key, ms in filled.entries.items():
        assert math.isfinite(ms) and ms >= 0, key
        if key.op.startswith(("cn", "ir", "ds")):
            assert ms > 0, key


def test_lookup_of_a_missing_op_says_how_to_fill_it(filled: LatencyTable) -> None:
    op = decode_op("ir_k5_e3_c8_hswish", 8)
    with pytest.raises(MissingLatencyError) as err:
        filled.lookup(op, 8)
    message = str(err.value)
    assert "ir_k5_e3_c8_hswish on 8x8x8" in message and "torch" in message and "batch 1" in message
    assert "measure_missing" in message and "ensure" in message
    assert isinstance(err.value, KeyError)


def test_measure_missing_fills_lookup(filled: LatencyTable) -> None:
    table = LatencyTable(filled.settings, filled.overhead_ms, filled.entries)
    op = decode_op("ir_k5_e3_c8_hswish", 8)
    assert table.measure_missing([(op, 8), (op, 8)]) == [LatencyKey("ir_k5_e3_c8_hswish", 8, 8)]
    assert table.lookup(op, 8) == table.entries[LatencyKey("ir_k5_e3_c8_hswish", 8, 8)]


def test_predict_is_overhead_plus_the_sum_of_entries(tiny: Arch) -> None:
    entries = {key: 0.5 + i for i, key in enumerate(dict.fromkeys(TINY_KEYS))}
    table = LatencyTable(MeasureSettings(), overhead_ms=0.25, entries=entries)
    assert table.predict(tiny) == pytest.approx(0.25 + sum(entries[k] for k in TINY_KEYS))
    layer_sum = sum(table.lookup(op, key.size) for (_, op), key in zip(tiny.layers(), TINY_KEYS))
    assert table.predict(tiny) == pytest.approx(0.25 + layer_sum + entries[TINY_KEYS[-2]] + entries[TINY_KEYS[-1]])


def test_predict_without_entries_fails(tiny: Arch) -> None:
    with pytest.raises(MissingLatencyError, match="cn_k3_c8_relu on 1x8x8"):
        LatencyTable(MeasureSettings(), overhead_ms=0.0).predict(tiny)


def test_save_load_round_trip(filled: LatencyTable, tmp_path: Path) -> None:
    path = tmp_path / "sub" / "table.json"
    filled.save(path)
    loaded = LatencyTable.load(path, runtime="torch", batch=1)
    assert loaded.settings == filled.settings
    assert loaded.overhead_ms == filled.overhead_ms
    assert dict(loaded.entries) == dict(filled.entries)
    assert loaded.environment == filled.environment
    assert {"torch", "onnxruntime", "cpu", "platform"} <= set(loaded.environment)
    assert [p.name for p in path.parent.iterdir()] == ["table.json"]  # no temp file left


def test_load_refuses_another_runtime_or_batch(filled: LatencyTable, tmp_path: Path) -> None:
    path = tmp_path / "table.json"
    filled.save(path)
    with pytest.raises(LatencyTableError, match="runtime='torch' but runtime='onnxruntime'"):
        LatencyTable.load(path, runtime="onnxruntime")
    with pytest.raises(LatencyTableError, match="batch=1 but batch=32"):
        LatencyTable.load(path, batch=32)


@pytest.mark.parametrize("change, match", [
    (lambda d: d.update(format="autospace-latency-table/0"), "expected 'autospace-latency-table/1'"),
    (lambda d: d.pop("entries"), "malformed latency table"),
    (lambda d: d["settings"].update(runtime="tensorrt"), "tensorrt"),
])
def test_load_refuses_other_formats(filled: LatencyTable, tmp_path: Path,
                                    change: Callable[[dict[str, Any]], object], match: str) -> None:
    data = filled.to_dict()
    change(data)
    path = tmp_path / "table.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match=match):
        LatencyTable.load(path)


def test_load_refuses_non_tables(tmp_path: Path) -> None:
    path = tmp_path / "table.json"
    path.write_text("[1, 2]")
    with pytest.raises(LatencyTableError, match="JSON list"):
        LatencyTable.load(path)
    path.write_text("{")
    with pytest.raises(LatencyTableError, match="not JSON"):
        LatencyTable.load(path)


def test_median_of_takes_per_entry_medians(tiny: Arch) -> None:
    key = TINY_KEYS[0]
    tables = [LatencyTable(MeasureSettings(), overhead_ms=o, entries={key: ms})
              for o, ms in ((0.1, 3.0), (0.3, 1.0), (0.2, 2.0))]
    merged = LatencyTable.median_of(tables)
    assert merged.overhead_ms == 0.2 and dict(merged.entries) == {key: 2.0}
    with pytest.raises(ValueError, match="same entries"):
        LatencyTable.median_of([tables[0], LatencyTable(MeasureSettings(), overhead_ms=0.1)])


def test_onnxruntime_measures_mbconv_with_se_and_hswish() -> None:
    table = LatencyTable.create(MeasureSettings("onnxruntime", **FAST))
    op = decode_op("ir_k3_e4_c16_se0.25_hswish", 16)
    table.measure_missing([(op, 16)])
    ms = table.lookup(op, 16)
    assert math.isfinite(ms) and ms > 0


def test_end_to_end_measurement_on_both_runtimes(tiny: Arch) -> None:
    for runtime in ("torch", "onnxruntime"):
        ms = measure_arch_latency(tiny, MeasureSettings(runtime, batch=2, **FAST))
        assert math.isfinite(ms) and ms > 0


def test_measurement_restores_torch_threads(tiny: Arch) -> None:
    before = torch.get_num_threads()
    measure_arch_latency(tiny, MeasureSettings("torch", threads=1, **FAST))
    assert torch.get_num_threads() == before


def test_settings_reject_unknown_runtimes() -> None:
    with pytest.raises(ValueError, match="use one of torch, onnxruntime"):
        MeasureSettings("tflite")


def test_rank_correlation() -> None:
    assert rank_correlation([1, 2, 3, 4], [10, 20, 35, 90]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get average ranks: [0, 1.5, 1.5, 3] vs [0, 2, 1, 3]
    assert rank_correlation([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
