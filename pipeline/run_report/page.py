"""``report.html``: one self-contained page (inline CSS and SVG, no scripts, no network) about one run."""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any

from pipeline.run_report.charts import fitness_colour, latency_svg, pareto_svg, reward_svg
from pipeline.run_report.diagram import arch_svg
from pipeline.run_report.records import LayerHeat, RunRecords, layer_heat
from pipeline.tables import arch_id, human
from spaces.arch import Arch
from spaces.budget import COST_FIELDS, measured_latency

__all__ = ["render_page"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{font-size:14px;margin:16px 0 4px}.muted,.note{color:#666;font-size:12px}code{font-size:12px;word-break:break-all}
table{border-collapse:collapse;font-size:12px;margin:6px 0}th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th:first-child,td:first-child,table.registry td:last-child{text-align:left}table.heat td{min-width:46px;text-align:center;font-size:11px}
table.heat td.absent{background:#fafafa;border-color:#f0f0f0}table.heat td.unscored{background:#eee;color:#888}
td.added{box-shadow:inset 3px 0 0 #2a7}td.dropped{text-decoration:line-through;box-shadow:inset -3px 0 0 #c33}
.grid{display:flex;flex-wrap:wrap;gap:8px 28px;align-items:flex-start}.chart{max-width:100%;height:auto}.missing{color:#a60}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:13px}dt{color:#666}dd{margin:0}
"""


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def _missing(what: str) -> str:
    return f'<p class="missing">{escape(what)}</p>'


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _f(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _overview(records: RunRecords) -> str:
    config, history = records.config, records.history
    best = (records.summary or {}).get("best") or (
        {"arch": history[-1]["champion"], "reward": history[-1].get("champion_reward")} if history else None)
    phase = records.status.get("phase", "not started")
    best_text = "-" if not (best and best.get("arch")) else (
        f"<b>{arch_id(best['arch'])}</b> reward {_f(best.get('reward'))}<br><code>{escape(best['arch'])}</code>")
    items = {"run directory": f"<code>{escape(str(records.root))}</code>",
             "phase": escape(phase),
             "generations": f"{len(history)} of {config.evolution.generations} "
                            f"({config.evolution.spaces_per_generation} spaces each)",
             "budget": f"{escape(config.budget.metric)} ≤ {config.budget.target:g}"
                       + (f" ({escape(config.budget.latency_runtime)})" if config.budget.metric == "latency" else ""),
             "best arch": best_text}
    return "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items.items()) + "</dl>"


def _rewards(records: RunRecords) -> str:
    history = records.history
    if not history:
        return _missing("No generation has finished yet.")
    rows = [[str(h["generation"]), _with_se(h["best_reward"], h.get("best_reward_se")), _f(h["mean_reward"]),
             str(len(h["spaces"])), str(h["failed_spaces"]), _madds_span(h["spaces"]),
             _resolution_fitness(h.get("resolution_fitness")),
             arch_id(h["champion"]) if h.get("champion") else "-"] for h in history]
    return (reward_svg(history) + _table(["generation", "best reward ± s.e.", "mean reward", "spaces", "failed",
                                          "MAdds spanned (5–95%)", "resolution fitness (n·P − 1)",
                                          "best arch so far"], rows))


def _resolution_fitness(fitness: dict[str, float] | None) -> str:
    """Each input resolution's fitness after the generation (learned P relative to uniform; evolve.loop)."""
    if not fitness:
        return "-"
    return ", ".join(f"{r} px {v:+.2f}" for r, v in sorted(fitness.items(), key=lambda item: int(item[0])))


def _with_se(value: float | None, se: float | None) -> str:
    return _f(value) if se is None else f"{_f(value)} ± {se:.3f}"


def _madds_span(spaces: list[dict[str, Any]]) -> str:
    """The MAdds range the generation's spaces span (each space's 5th-95th percentile of uniform members)."""
    ranges = [s["madds_range"] for s in spaces if s.get("madds_range")]
    if not ranges:
        return "-"
    return f"{min(r[0] for r in ranges) / 1e6:.2f}M–{max(r[1] for r in ranges) / 1e6:.2f}M"


def _heat_table(heat: LayerHeat, low: float, high: float) -> str:
    head = "".join(f"<th>g{g}</th>" for g in heat.generations)
    body = []
    for cell in heat.cells:
        tds = []
        for g in heat.generations:
            classes = []
            if cell in heat.added.get(g, set()):
                classes.append("added")
            if cell in heat.dropped.get(g, set()):
                classes.append("dropped")
            if g not in heat.fitness[cell]:
                tds.append('<td class="absent"></td>')
                continue
            value = heat.fitness[cell][g]
            if value is None:
                tds.append(f'<td class="unscored {" ".join(classes)}" title="in the population, not offered yet">'
                           "·</td>")
                continue
            colour = fitness_colour(value, low, high)
            ink = "#fff" if (value - low) < 0.5 * (high - low) else "#000"
            tds.append(f'<td class="{" ".join(classes)}" style="background:{colour};color:{ink}" '
                       f'title="{escape(cell)} after generation {g}: fitness {100 * value:+.2f} points">'
                       f"{100 * value:+.1f}</td>")
        body.append(f"<tr><th>{escape(cell)}</th>{''.join(tds)}</tr>")
    return (f'<div class="layer"><h3>stage {heat.stage} layer {heat.layer}</h3>'
            f'<table class="heat" data-stage="{heat.stage}" data-layer="{heat.layer}"><thead><tr><th>cell</th>'
            f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _space_evolution(records: RunRecords) -> str:
    heats = layer_heat(records)
    if not heats:
        return _missing("No generation has finished yet.")
    values = [v for h in heats for per in h.fitness.values() for v in per.values() if v is not None]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    legend = (f'<p class="muted">Cell fitness after each generation: its accuracy effect in points of validation '
              "accuracy relative to the layer's other cells, among members within the budget (0 = no better or "
              f"worse; colour from {100 * low:+.1f} to {100 * high:+.1f}). Green edge: the cell entered the "
              "population that generation (a mutant); "
              "red edge and struck through: dropped after it; ·: in the population, not offered by any space yet; "
              "blank: not in the population.</p>")
    return legend + '<div class="grid">' + "".join(_heat_table(h, low, high) for h in heats) + "</div>"


def _points(records: RunRecords) -> list[dict[str, Any]]:
    points = [{**s, "generation": h["generation"]} for h in records.history for s in h["spaces"] if s.get("arch")]
    final = (records.summary or {}).get("final_search") or {}
    if final.get("arch"):
        points.append({**final, "generation": len(records.history), "final": True})
    return points


def _pareto(records: RunRecords) -> str:
    points = _points(records)
    if not points:
        return _missing("No architecture has been derived yet.")
    metric = records.config.budget.metric
    cost_key = COST_FIELDS[metric]
    label = {"madds": "MAdds", "params": "params", "latency": "predicted latency (ms)"}[metric]
    rows = [[f"<b>{arch_id(p['arch'])}</b>", human(p["madds"]), human(p["params"]),
             _f(p.get("predicted_latency_ms")), _f(p["val_accuracy"]),
             "final search" if p.get("final") else f"gen {p.get('generation', '-')}"]
            for p in (records.summary or {}).get("pareto_front", [])]
    front = _table(["arch", "MAdds", "params", "predicted ms", "val acc", "from"], rows) if rows else ""
    return pareto_svg(points, cost_key, label, records.config.budget.target) + front


def _best_arch(records: RunRecords) -> str:
    summary, history = records.summary or {}, records.history
    arch = (summary.get("best") or {}).get("arch") or (history[-1]["champion"] if history else None)
    if not arch:
        return _missing("No architecture has been derived yet.")
    return (f'<p><b>{arch_id(arch)}</b> <code>{escape(arch)}</code></p>'
            f'<div class="diagram-box">{arch_svg(Arch.parse(arch))}</div>')


def _latency(records: RunRecords) -> str:
    models = (records.deploy or {}).get("models", [])
    runtime = records.config.budget.latency_runtime
    measured = [(m, measured_latency(m.get("export", {}).get("latency_ms", {}), runtime)) for m in models]
    pairs = [(arch_id(m["arch"]), m["predicted_latency_ms"], ms) for m, ms in measured
             if m.get("predicted_latency_ms") is not None and ms is not None]
    if not pairs:
        return _missing("No exported model with a predicted latency yet (the deploy stage writes deploy.json).")
    rows = [[f"<b>{name}</b>", _f(p), _f(m), f"{100 * (m - p) / p:+.0f}%"] for name, p, m in pairs]
    return (f'<div class="grid">{latency_svg(pairs, runtime)}'
            + _table(["model", "predicted ms", "measured ms", "error"], rows) + "</div>"
            + f'<p class="muted">Batch 1, one thread, {escape(runtime)}; predicted from the run\'s latency table, '
              "measured on the exported model.</p>")


def _registry(records: RunRecords) -> str:
    models = (records.deploy or {}).get("models", [])
    if not models:
        return _missing("Nothing registered yet (retrain.enabled, or the deploy stage has not run).")
    rows = []
    for m in models:
        promotion = m.get("promotion", {})
        rows.append([f"<b>{arch_id(m['arch'])}</b>", escape(f"v{m['version']}") if m.get("version") else "-",
                     _f(m.get("retrain", {}).get("test_accuracy")),
                     f'<span class="decision">{escape(promotion.get("decision", "-"))}</span>',
                     escape("; ".join(promotion.get("reasons", [])))])
    name = escape(records.config.mlflow.registered_model)
    return (f"<p>Registered model <code>{name}</code>; the champion alias moves only when the rule allows "
            "(<code>docs/registry.md</code>).</p>"
            + _table(["model", "version", "test acc", "decision", "reasons"], rows, "registry"))


def _arch_index(records: RunRecords) -> str:
    archs = [p["arch"] for p in _points(records)] + [m["arch"] for m in (records.deploy or {}).get("models", [])]
    rows = [[f"<b>{arch_id(a)}</b>", f"<code>{escape(a)}</code>"] for a in dict.fromkeys(archs)]
    return _table(["id", "architecture"], rows, "archs") if rows else _missing("No architectures yet.")


def render_page(records: RunRecords) -> str:
    """The whole report for ``records`` as one HTML document."""
    sections = [
        _section("overview", "Run", _overview(records)),
        _section("rewards", "Reward per generation", _rewards(records)),
        _section("space-evolution", "How the search space evolved", _space_evolution(records)),
        _section("pareto", "Accuracy vs cost", _pareto(records)),
        _section("best-arch", "Best architecture", _best_arch(records)),
        _section("latency", "Predicted vs measured latency", _latency(records)),
        _section("registry", "Registry decisions", _registry(records)),
        _section("archs", "Architectures by id", _arch_index(records)),
    ]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = f"AutoSpace run {records.root.name}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            f'<body><h1>{escape(title)}</h1><p class="muted">written {stamp} by <code>autospace report</code>; '
            f'arch ids are the first 8 hex digits of the arch string\'s SHA-256</p>{"".join(sections)}</body></html>')
