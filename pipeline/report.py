"""End-of-run reporting: the Pareto front of accuracy vs cost, its plot, and the summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["pareto_front", "plot_pareto"]


def pareto_front(points: list[dict[str, Any]], cost_key: str = "madds") -> list[dict[str, Any]]:
    """Points not dominated by another (higher or equal accuracy at lower or equal cost), cheapest first."""
    ordered = sorted(points, key=lambda p: (p[cost_key], -p["val_accuracy"]))
    front: list[dict[str, Any]] = []
    for point in ordered:
        if not front or point["val_accuracy"] > front[-1]["val_accuracy"]:
            front.append(point)
    return front


def plot_pareto(points: list[dict[str, Any]], front: list[dict[str, Any]], path: Path, target: float,
                cost_key: str = "madds") -> Path:
    """Scatter of every evaluated architecture, the front as a line, the budget as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.scatter([p[cost_key] for p in points], [p["val_accuracy"] for p in points], s=18, alpha=0.6,
               c=[p.get("generation", 0) for p in points], cmap="viridis", label="searched architectures")
    ax.plot([p[cost_key] for p in front], [p["val_accuracy"] for p in front], "r-o", ms=4, label="Pareto front")
    ax.axvline(target, color="gray", ls="--", lw=1, label="budget target")
    ax.set_xlabel(cost_key)
    ax.set_ylabel("validation accuracy")
    ax.set_title("AutoSpace: accuracy vs cost")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
