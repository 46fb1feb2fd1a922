"""A study's figures, from the points' metrics over all prompts and the dev objective:

- the quality–diversity frontier over all methods (every grid point; the chosen settings ringed; the
  Pareto front dashed);
- each metric against the temperature, one line per method (the min-p paper's temperature-robustness
  figure); a point without a temperature setting samples at 1.0, a method that does not sample is left out;
- each method's sensitivity: its dev objective at every grid point, and the range.
"""

from __future__ import annotations

import math
from typing import Optional

from decodebench.report.figures import Plot, _png
from decodebench.report.model import direction

DIVERSITY = ("diversity", "distinct_2", "self_bleu_4")
MAX_PANELS = 4


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _colors(methods: list[str]) -> dict[str, str]:
    return {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(methods))}


def _pareto(pts: list[tuple[float, float]], xu: bool, yu: bool) -> list[tuple[float, float]]:
    def dominated(a, b):  # b dominates a
        bx = b[0] >= a[0] if xu else b[0] <= a[0]
        by = b[1] >= a[1] if yu else b[1] <= a[1]
        return bx and by and b != a
    return sorted({p for p in pts if not any(dominated(p, q) for q in pts)})


def frontier(data: dict) -> Optional[Plot]:
    res, metrics = data["result"], data["metrics"]
    q = res["metric"]
    d = next((m for m in DIVERSITY if m != q and any(_num((metrics.get(p["name"]) or {}).get(m))
                                                      for p in res["points"])), None)
    pts = [p for p in res["points"] if _num((metrics.get(p["name"]) or {}).get(q))
           and d is not None and _num(metrics[p["name"]].get(d))]
    if not pts:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 5.5))
    ax = fig.subplots()
    colors = _colors([p["method"] for p in pts])
    chosen = {c["point"]["name"] for c in res["choices"]}
    for m, col in colors.items():
        mine = [p for p in pts if p["method"] == m]
        ax.scatter([metrics[p["name"]][d] for p in mine], [metrics[p["name"]][q] for p in mine], color=col,
                   label=m, s=36)
        for p in mine:
            if p["name"] in chosen:
                ax.scatter([metrics[p["name"]][d]], [metrics[p["name"]][q]], s=160, facecolors="none",
                           edgecolors=col, linewidths=2)
    qu, du = res["maximize"], direction(d) is not False
    front = _pareto([(metrics[p["name"]][d], metrics[p["name"]][q]) for p in pts], du, qu)
    if len(front) > 1:
        ax.plot(*zip(*front), "--", color="0.4", zorder=0, label="Pareto front")
    ax.set_xlabel(d)
    ax.set_ylabel(q)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return Plot(f"Quality–diversity frontier: {q} against {d}",
                "Every grid point of every method, over all prompts; rings: the settings chosen on the dev prompts; "
                "dashed: the Pareto front.", _png(fig))


def temperature_of(p: dict, meta: dict) -> Optional[float]:
    """The point's sampling temperature (1.0 when it samples without one); None when it does not sample."""
    t = p["values"].get("temperature")
    if _num(t):
        return float(t)
    strategy = meta["methods"].get(p["method"], {}).get("strategy")
    if strategy in ("greedy", "beam", "contrastive", "diverse_beam"):
        return None
    return 1.0


def against_temperature(data: dict) -> Optional[Plot]:
    res, metrics, meta = data["result"], data["metrics"], data["meta"]
    by_method: dict[str, list] = {}
    for p in res["points"]:
        t = temperature_of(p, meta)
        if t is not None:
            by_method.setdefault(p["method"], []).append((t, metrics.get(p["name"]) or {}))
    if not any(len({t for t, _ in v}) > 1 for v in by_method.values()):
        return None
    wanted = [res["metric"], *DIVERSITY, "gen_length", "rep_2"]
    shown = [m for m in dict.fromkeys(wanted) if any(_num(x.get(m)) for v in by_method.values() for _, x in v)]
    shown = shown[:MAX_PANELS]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(shown), 4.0))
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    colors = _colors(list(by_method))
    for ax, m in zip(axes, shown):
        for meth, vals in by_method.items():
            xs = sorted((t, x[m]) for t, x in vals if _num(x.get(m)))
            if xs:
                ax.plot(*zip(*xs), "o-", color=colors[meth], label=meth)
        ax.set_xlabel("temperature")
        ax.set_title(m, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return Plot("Each metric against the temperature, one line per method",
                "Over all prompts; the min-p paper's temperature-robustness figure.", _png(fig))


def sensitivity(data: dict) -> Optional[Plot]:
    res = data["result"]
    tuned = [c for c in res["choices"] if c["budget"] > 1]
    if not tuned:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 1.1 * len(tuned) + 2), 4.2))
    ax = fig.subplots()
    for i, c in enumerate(tuned):
        devs = [p["dev"] for p in res["points"] if p["method"] == c["method"] and _num(p["dev"])]
        if devs:
            ax.vlines(i, min(devs), max(devs), color="C0", linewidth=6, alpha=0.35)
            ax.scatter([i] * len(devs), devs, color="C0", s=20)
            ax.scatter([i], [c["point"]["dev"]], color="C3", marker="*", s=120, zorder=3)
    ax.set_xticks(range(len(tuned)), [c["method"] for c in tuned], rotation=30, ha="right")
    ax.set_ylabel(f"{res['metric']} on dev")
    ax.grid(alpha=0.3, axis="y")
    return Plot("Sensitivity: the dev objective over each method's grid",
                "Bar: the range (max - min) over the method's grid points (dots); star: the chosen setting.", _png(fig))


def render(data: dict) -> list[Plot]:
    return [p for p in (frontier(data), against_temperature(data), sensitivity(data)) if p is not None]
