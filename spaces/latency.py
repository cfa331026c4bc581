"""Per-op latency lookup table: measured on the target runtime, summed to predict a network.

Searching for fast networks needs latency as a cheap function of the chosen ops,
so each op is timed once, alone, on the runtime that will serve the model (torch
eager on CPU, or onnxruntime's CPU provider), and a network is predicted as the
sum of its ops. A table fixes the runtime, batch size and thread count; inside it
an entry is keyed by the op string of :func:`spaces.encoding.encode_op`, the input
channels and the input spatial size, and holds the median milliseconds of
``repeats`` calls after ``warmup`` calls.

Every timed call pays a fixed cost the network pays only once (the Python call,
``session.run``, the timer). The table measures that cost on an identity module
(``overhead_ms``), subtracts it from every entry (clamped at 0) and adds it back
once per predicted network, so a sum of many small ops is not inflated by it.

The classifier tail gets entries of its own: ``gap`` (global average pooling,
keyed by the pooled channels and spatial size) and ``fc_<features>x<classes>``
(the linear layer, size 1), named as in :func:`spaces.cost.layer_costs`.
Networks and ops are timed by one function, :func:`measure_module_latency`.
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import cache
from importlib import metadata
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from spaces.arch import Arch
from spaces.atomic import write_text_atomically
from spaces.cost import layer_costs
from spaces.encoding import decode_op, encode_op
from spaces.modules import ChildNet, build_op
from spaces.onnx_session import load_onnx_session
from spaces.ops import ConvOp, Op

__all__ = [
    "FORMAT",
    "RUNTIMES",
    "LatencyKey",
    "LatencyTable",
    "LatencyTableError",
    "MeasureSettings",
    "MissingLatencyError",
    "arch_keys",
    "measure_arch_latency",
    "measure_module_latency",
    "op_key",
    "rank_correlation",
]

FORMAT = "autospace-latency-table/1"
RUNTIMES = ("torch", "onnxruntime")
_OVERHEAD_REPEATS = 200
_FC = re.compile(r"^fc_(\d+)x(\d+)$")


def _check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r} is not supported; use one of {', '.join(RUNTIMES)}")


class LatencyTableError(ValueError):
    """A saved table cannot be used here; the message says why and what to do."""


class MissingLatencyError(KeyError):
    """The table has no entry for an (op, input shape); the message says how to measure it."""

    def __str__(self) -> str:  # KeyError would print the message as a quoted repr
        return str(self.args[0])


@dataclass(frozen=True, order=True)
class LatencyKey:
    """One table entry: an op string (or ``gap`` / ``fc_<f>x<c>``) on a ``cin x size x size`` input."""

    op: str
    cin: int
    size: int

    def __str__(self) -> str:
        return f"{self.op} on {self.cin}x{self.size}x{self.size}"


@dataclass(frozen=True)
class MeasureSettings:
    """How latencies are measured; a table's entries are only comparable under equal settings.

    One thread by default: on a small shared CPU it is the most repeatable setting.
    """

    runtime: str = "torch"
    batch: int = 1
    threads: int = 1
    warmup: int = 5
    repeats: int = 20

    def __post_init__(self) -> None:
        _check_runtime(self.runtime)
        for name in ("batch", "threads", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.warmup < 0:
            raise ValueError(f"warmup={self.warmup} must be non-negative")

    def measure(self, module: nn.Module, sample_shape: tuple[int, ...]) -> float:
        """Median ms of ``module`` on a batch of ``sample_shape`` inputs under these settings."""
        return measure_module_latency(module, (self.batch, *sample_shape), self.runtime,
                                      threads=self.threads, warmup=self.warmup, repeats=self.repeats)


# ---- measuring -----------------------------------------------------------------
def measure_module_latency(module: nn.Module, input_shape: tuple[int, ...], runtime: str = "torch", *,
                           threads: int = 1, warmup: int = 5, repeats: int = 20) -> float:
    """Median wall-clock ms of one forward call of ``module`` (eval mode) on ``runtime``.

    The single mechanism behind both table entries and end-to-end figures, so that
    the two differ only in what is timed, not in how.
    """
    _check_runtime(runtime)
    module.eval()
    x = torch.randn(*input_shape)
    with _torch_threads(threads), torch.no_grad():
        call = (lambda: module(x)) if runtime == "torch" else _onnxruntime_call(module, x, threads)
        return _median_ms(call, warmup, repeats)


def measure_arch_latency(arch: Arch, settings: MeasureSettings) -> float:
    """Measured end-to-end ms of the child network of ``arch`` (the quantity tables predict)."""
    return settings.measure(ChildNet(arch), (arch.in_channels, arch.input_size, arch.input_size))


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Pin torch's intra-op threads for one measurement, restoring the caller's setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _median_ms(call: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _onnxruntime_call(module: nn.Module, x: torch.Tensor, threads: int) -> Callable[[], object]:
    """A zero-argument call running ``module`` exported to ONNX in a CPU session."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the legacy exporter warns that it is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), buffer,  # type: ignore[arg-type]  # the stub omits file objects
                          dynamo=False, opset_version=17, input_names=["x"], output_names=["y"])
    session = load_onnx_session(buffer.getvalue(), threads=threads)
    feed = {"x": x.numpy()}
    return lambda: session.run(None, feed)


# ---- keys and the modules they stand for ------------------------------------------
@cache
def _op_name(op: Op) -> str:
    """``encode_op`` memoised: lookups happen in search inner loops."""
    return encode_op(op)


def op_key(op: Op, input_size: int) -> LatencyKey:
    """The entry of ``op`` on a square input of side ``input_size``."""
    return LatencyKey(_op_name(op), op.cin, input_size)


def arch_keys(arch: Arch) -> list[LatencyKey]:
    """The entries whose sum predicts ``arch``: every layer, then pooling and classifier.

    Input sizes come from :func:`spaces.cost.layer_costs` (pooled head convs at size 1).
    """
    rows = layer_costs(arch)
    keys, pool = [], LatencyKey("gap", arch.in_channels, arch.input_size)
    for (_, op), row in zip(arch.layers(), rows):
        keys.append(LatencyKey(row.op, op.cin, row.input_size))
        if not (isinstance(op, ConvOp) and op.after_pool):
            pool = LatencyKey("gap", op.cout, -(-row.input_size // op.stride))
    classifier = rows[-1]
    return [*keys, pool, LatencyKey(classifier.op, arch.feature_channels, classifier.input_size)]


class _GlobalPool(nn.Module):
    """ChildNet's pooling, as a module so it can be timed alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


def _key_module(key: LatencyKey) -> nn.Module:
    if key.op == "gap":
        return _GlobalPool()
    fc = _FC.match(key.op)
    if fc:
        return nn.Sequential(nn.Flatten(1), nn.Linear(int(fc.group(1)), int(fc.group(2))))
    return build_op(decode_op(key.op, key.cin))


# ---- the table --------------------------------------------------------------------
class LatencyTable:
    """Measured per-op latencies (ms, net of ``overhead_ms``) for one runtime and batch size."""

    def __init__(self, settings: MeasureSettings, overhead_ms: float,
                 entries: Mapping[LatencyKey, float] | None = None,
                 environment: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        self.overhead_ms = overhead_ms
        self._entries = dict(entries or {})
        self.environment = dict(environment or _environment())

    @classmethod
    def create(cls, settings: MeasureSettings | None = None) -> LatencyTable:
        """An empty table for ``settings``, with the runtime's per-call overhead measured now.

        The overhead is subtracted from every entry, so a noisy value would skew them
        all; it costs microseconds, so it gets many more repeats than an op does.
        """
        settings = settings or MeasureSettings()
        overhead = replace(settings, warmup=max(settings.warmup, _OVERHEAD_REPEATS // 10),
                           repeats=max(settings.repeats, _OVERHEAD_REPEATS))
        return cls(settings, overhead.measure(nn.Identity(), (1, 1, 1)))

    @classmethod
    def median_of(cls, tables: Sequence[LatencyTable]) -> LatencyTable:
        """Per-entry median of tables measured in separate passes: one pass can hit a burst of load
        on a shared machine, several interleaved passes rarely hit the same entry."""
        if not tables:
            raise ValueError("median_of needs at least one table")
        first, keys = tables[0], set(tables[0].entries)
        for other in tables[1:]:
            if other.settings != first.settings or set(other.entries) != keys:
                raise ValueError("median_of needs tables with equal settings and the same entries; "
                                 "fill each with the same ensure/measure_missing calls")
        return cls(first.settings, statistics.median(t.overhead_ms for t in tables),
                   {k: statistics.median(t.entries[k] for t in tables) for k in keys}, first.environment)

    @property
    def entries(self) -> Mapping[LatencyKey, float]:
        return MappingProxyType(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: LatencyKey) -> bool:
        return key in self._entries

    def lookup(self, op: Op, input_size: int) -> float:
        """Net ms of ``op`` on a square input of side ``input_size``; cheap enough for search loops."""
        return self.entry(op_key(op, input_size))

    def entry(self, key: LatencyKey) -> float:
        """Net ms of one entry; raises MissingLatencyError saying how to measure it."""
        try:
            return self._entries[key]
        except KeyError:
            s = self.settings
            raise MissingLatencyError(
                f"no {s.runtime} latency (batch {s.batch}) for {key}; measure it with "
                f"table.measure_missing([(op, {key.size})]), table.ensure(arch) or, for a whole search space, "
                f"table.ensure_keys(space_latency_keys(space))") from None

    def measure_missing(self, ops_with_sizes: Iterable[tuple[Op, int]]) -> list[LatencyKey]:
        """Measure each (op, input size) not yet in the table; returns the keys added."""
        return self.ensure_keys(op_key(op, size) for op, size in ops_with_sizes)

    def ensure(self, arch: Arch) -> list[LatencyKey]:
        """Measure whatever ``predict(arch)`` would miss; returns the keys added."""
        return self.ensure_keys(arch_keys(arch))

    def ensure_keys(self, keys: Iterable[LatencyKey]) -> list[LatencyKey]:
        """Measure each key not yet in the table (e.g. every entry a search space can need); returns those added."""
        added = []
        for key in dict.fromkeys(keys):
            if key not in self._entries:
                ms = self.settings.measure(_key_module(key), (key.cin, key.size, key.size))
                self._entries[key] = max(0.0, ms - self.overhead_ms)
                added.append(key)
        return added

    def predict(self, arch: Arch) -> float:
        """Predicted end-to-end ms: the entries of every layer and the tail, plus one call overhead."""
        return self.overhead_ms + sum(self.entry(key) for key in arch_keys(arch))

    # ---- persistence -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "settings": asdict(self.settings),
            "environment": self.environment,
            "overhead_ms": self.overhead_ms,
            "entries": [{"op": k.op, "cin": k.cin, "size": k.size, "ms": ms}
                        for k, ms in sorted(self._entries.items())],
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write JSON atomically, so readers never see half a table."""
        write_text_atomically(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], runtime: str | None = None,
                  batch: int | None = None) -> LatencyTable:
        """Rebuild a table, refusing other formats and, when given, another runtime or batch."""
        if data.get("format") != FORMAT:
            raise LatencyTableError(f"format={data.get('format')!r}; expected {FORMAT!r} "
                                    "(re-measure the table with this version of spaces.latency)")
        try:
            settings = MeasureSettings(**data["settings"])
            entries = {LatencyKey(e["op"], int(e["cin"]), int(e["size"])): float(e["ms"]) for e in data["entries"]}
            table = cls(settings, float(data["overhead_ms"]), entries, data["environment"])
        except (KeyError, TypeError, ValueError) as err:
            raise LatencyTableError(f"malformed latency table ({err!r}); re-measure and save it again") from None
        for name, wanted in (("runtime", runtime), ("batch", batch)):
            have = getattr(settings, name)
            if wanted is not None and have != wanted:
                raise LatencyTableError(f"table was measured with {name}={have!r} but {name}={wanted!r} is "
                                        f"needed; load or build a table for {name}={wanted!r}")
        return table

    @classmethod
    def load(cls, path: str | os.PathLike[str], runtime: str | None = None,
             batch: int | None = None) -> LatencyTable:
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as err:
                raise LatencyTableError(f"{os.fspath(path)} is not JSON ({err}); expected a {FORMAT} table") from None
        if not isinstance(data, dict):
            raise LatencyTableError(f"{os.fspath(path)} holds a JSON {type(data).__name__}, not a {FORMAT} table")
        return cls.from_dict(data, runtime, batch)


def _environment() -> dict[str, Any]:
    """What a latency depends on besides the op: library versions and the machine."""
    return {
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---- reporting ----------------------------------------------------------------------
def rank_correlation(a: Iterable[float], b: Iterable[float]) -> float:
    """Spearman's rho (Pearson correlation of average ranks), how well a table orders networks."""
    ra, rb = _ranks(np.asarray(list(a), float)), _ranks(np.asarray(list(b), float))
    if len(ra) != len(rb) or len(ra) < 2:
        raise ValueError(f"rank correlation needs two equally long sequences of at least 2 (got {len(ra)}, {len(rb)})")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, tie_group, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(tie_group, weights=ranks) / counts)[tie_group]
