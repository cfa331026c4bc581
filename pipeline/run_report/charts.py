"""The report's plots, drawn by matplotlib (Agg) and inlined as SVG: nothing is fetched when the page opens."""

from __future__ import annotations

import io
import re
from typing import Any

from matplotlib.ticker import FuncFormatter, MaxNLocator

from pipeline.report import pareto_front
from pipeline.tables import human

__all__ = ["fitness_colour", "latency_svg", "pareto_svg", "reward_svg"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "svg.fonttype": "none"})  # text stays text: selectable, small
    return plt


def _svg(fig: Any, label: str) -> str:
    """The figure as an ``<svg>`` element (no XML prolog) labelled for screen readers and tests."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    _pyplot().close(fig)
    text = buffer.getvalue()
    svg = re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg"):], flags=re.S)  # RDF: a date, URIs
    return re.sub(r"<svg\b", f'<svg role="img" aria-label="{label}" class="chart"', svg, count=1)


def reward_svg(history: list[dict[str, Any]]) -> str:
    """Best and mean space reward per generation (the best with ±1.96 s.e. bars where recorded), with the
    range of the generation's spaces shaded."""
    plt = _pyplot()
    generations = [h["generation"] for h in history]
    rewards = [[s["reward"] for s in h["spaces"] if s.get("reward") is not None] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3))
    lows = [min(r) if r else float("nan") for r in rewards]
    highs = [max(r) if r else float("nan") for r in rewards]
    ax.fill_between(generations, lows, highs, color="tab:blue", alpha=0.15, label="range of the spaces")
    errors = [1.96 * (h.get("best_reward_se") or 0.0) for h in history]
    ax.errorbar(generations, [h["best_reward"] for h in history], yerr=errors, fmt="o-", color="tab:blue",
                capsize=3, label="best (95% interval)")
    ax.plot(generations, [h["mean_reward"] for h in history], "s--", color="tab:orange", label="mean")
    ax.set_xlabel("generation")
    ax.set_ylabel("space reward")
    ax.set_xticks(generations)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _svg(fig, "reward per generation")


def pareto_svg(points: list[dict[str, Any]], cost_key: str, cost_label: str, target: float) -> str:
    """Accuracy vs cost of every derived architecture, coloured by generation; the front and the budget."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    searched = [p for p in points if not p.get("final")]
    scatter = ax.scatter([p[cost_key] for p in searched], [p["val_accuracy"] for p in searched],
                         c=[p["generation"] for p in searched], cmap="viridis", s=28, edgecolors="k", linewidths=0.3)
    final = [p for p in points if p.get("final")]
    if final:
        ax.scatter([p[cost_key] for p in final], [p["val_accuracy"] for p in final], marker="*", s=160,
                   color="tab:red", edgecolors="k", linewidths=0.4, label="final search", zorder=3)
    front = pareto_front(points, cost_key)
    ax.plot([p[cost_key] for p in front], [p["val_accuracy"] for p in front], "-", color="tab:red", lw=1,
            label="Pareto front")
    ax.axvline(target, color="gray", ls="--", lw=1, label=f"budget {target:g}")
    generations = sorted({p["generation"] for p in searched})
    bar = fig.colorbar(scatter, ax=ax, label="generation", ticks=generations)
    bar.ax.set_yticklabels([str(g) for g in generations])
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: human(x)))
    ax.set_xlabel(cost_label)
    ax.set_ylabel("validation accuracy")
    ax.margins(0.08)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _svg(fig, "Pareto front")


def latency_svg(pairs: list[tuple[str, float, float]], runtime: str) -> str:
    """Predicted (latency table) vs measured (exported model) ms per model, with the y = x line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 3.4))
    predicted = [p for _, p, _ in pairs]
    measured = [m for _, _, m in pairs]
    top = max(predicted + measured) * 1.15
    ax.plot([0, top], [0, top], ":", color="gray", label="predicted = measured")
    ax.scatter(predicted, measured, s=36, color="tab:purple", edgecolors="k", linewidths=0.3, zorder=3)
    for (name, p, m) in pairs:
        ax.annotate(name, (p, m), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel(f"predicted ms ({runtime}, latency table)")
    ax.set_ylabel(f"measured ms ({runtime}, exported)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _svg(fig, "predicted vs measured latency")


def fitness_colour(value: float, low: float, high: float) -> str:
    """A viridis hex colour for a heat-map cell (the same map as the Pareto plot's generations)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    share = 0.5 if high <= low else (value - low) / (high - low)
    return to_hex(colormaps["viridis"](min(max(share, 0.0), 1.0)))
