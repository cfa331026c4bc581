"""The budget metrics and where each one's cost lives: the one answer to "what does X cost on metric M".

An architecture is priced on a metric by :func:`budget_cost` (exact MAdds or
parameters, or the run's latency table in ms). A search's derived architecture
carries that cost in a field of its record (:data:`COST_FIELDS`, read with
:func:`recorded_cost`; latency: the table's prediction), which is what the
evolution's reward, the Pareto front and the summary read. A registered model
carries its cost in a version tag (:data:`COST_TAGS`; latency: the exported
model measured on the budget's runtime at :data:`LATENCY_BATCH`, read from an
export report with :func:`measured_latency`), which is what the champion rule reads.
"""

from __future__ import annotations

from typing import Any, Mapping

from spaces.arch import Arch
from spaces.cost import arch_cost
from spaces.latency import LatencyTable

__all__ = ["COST_FIELDS", "COST_TAGS", "LATENCY_BATCH", "METRICS", "budget_cost", "check_metric", "measured_latency",
           "recorded_cost"]

METRICS = ("madds", "params", "latency")
COST_FIELDS = {"madds": "madds", "params": "params", "latency": "predicted_latency_ms"}
"""Budget metric -> the field of a search result (or a record made from one) holding the derived arch's cost."""
COST_TAGS = {"madds": "madds", "params": "params", "latency": "latency_ms"}
"""Budget metric -> the registered version's tag holding the model's cost (latency: measured after export)."""
LATENCY_BATCH = 1
"""The batch size latency is predicted and measured at for the budget."""


def check_metric(metric: str) -> str:
    """``metric`` itself, or a ValueError naming the metrics there are."""
    if metric not in METRICS:
        raise ValueError(f"budget metric {metric!r} is not one of {', '.join(METRICS)}")
    return metric


def budget_cost(arch: Arch, metric: str, table: LatencyTable | None = None) -> float:
    """The cost of ``arch`` on the budget's metric: MAdds, params or the table's predicted ms."""
    if check_metric(metric) == "latency":
        if table is None:
            raise ValueError("a latency budget needs the latency table to price architectures")
        return table.predict(arch)
    cost = arch_cost(arch)
    return float(cost.madds if metric == "madds" else cost.params)


def recorded_cost(record: Mapping[str, Any], metric: str) -> float:
    """The derived architecture's cost on the budget metric as a search result's record holds it."""
    key = COST_FIELDS[check_metric(metric)]
    cost = record.get(key)
    if cost is None:
        raise ValueError(f"the search result lacks {key!r}, so its {metric} budget is unknown "
                         "(latency: predict the derived arch with the run's latency table first)")
    return float(cost)


def measured_latency(latency_ms: Mapping[str, Mapping[str, float]], runtime: str) -> float | None:
    """An export report's measured latency (``latency_ms``: runtime -> batch -> ms) at the budget's batch."""
    return latency_ms.get(runtime, {}).get(str(LATENCY_BATCH))
