"""tradeoff.png: accuracy against latency, the picture a user chooses an artifact from.

A bench of several artifacts gives two numbers per artifact that people otherwise
combine by hand: the p50 measured here, on this machine, and the test accuracy its
parity summary carries (contract/artifact.py). The artifacts no other one beats on
both (faster *and* at least as accurate) are the best trade-offs; every other point
is dominated, and choosing it gives up speed or accuracy for nothing. The figure
marks and joins them, and `best_tradeoffs` names them for `--json`.
"""

from __future__ import annotations

from pathlib import Path

from edgetl import atomic


def best_tradeoffs(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, accuracy) points that no other point dominates, fastest first.

    A point is dominated when another is no slower and no less accurate, and better in one.
    """
    front = []
    for i, (latency, accuracy) in enumerate(points):
        dominated = any(
            (other_latency <= latency and other_accuracy >= accuracy)
            and (other_latency < latency or other_accuracy > accuracy)
            for j, (other_latency, other_accuracy) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _name(model: dict) -> str:
    return f"{model.get('format')}-{model.get('precision')}" if model.get("format") else Path(model["path"]).name


def tradeoff(models: list[dict]) -> dict | None:
    """{"points": [{name, path, p50_ms, accuracy, best}], "best": [names]} over the models whose
    accuracy is known; None with fewer than two such models (nothing to choose between)."""
    known = [m for m in models if m.get("accuracy") is not None and m.get("p50_ms") is not None]
    if len(known) < 2:
        return None
    front = set(best_tradeoffs([(m["p50_ms"], m["accuracy"]) for m in known]))
    points = [{"name": _name(m), "path": m["path"], "p50_ms": m["p50_ms"], "accuracy": m["accuracy"],
               "best": i in front} for i, m in enumerate(known)]
    best = sorted((p for p in points if p["best"]), key=lambda p: p["p50_ms"])
    return {"points": points, "best": [p["name"] for p in best]}


def plot_tradeoff(result: dict, path: Path, where: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result["points"]
    fig, ax = plt.subplots(figsize=(10.5, 5.2))
    others = [p for p in points if not p["best"]]
    best = sorted((p for p in points if p["best"]), key=lambda p: p["p50_ms"])
    ax.scatter([p["p50_ms"] for p in others], [100 * p["accuracy"] for p in others], s=46, color="0.6",
               label="dominated: another artifact is faster and at least as accurate", zorder=2)
    ax.plot([p["p50_ms"] for p in best], [100 * p["accuracy"] for p in best], "-o", color="tab:blue",
            markersize=8, label="best trade-offs", zorder=3)
    low, high = min(p["p50_ms"] for p in points), max(p["p50_ms"] for p in points)
    accuracies = [100 * p["accuracy"] for p in points]
    _number_points(ax, points)
    ax.set_xlim(0, high + 0.15 * (high - low or high))  # from zero: ratios between artifacts read true
    span = max(accuracies) - min(accuracies)
    ax.set_ylim(min(accuracies) - max(0.3, 0.15 * span), max(accuracies) + max(0.3, 0.15 * span))
    ax.set(xlabel=f"p50 latency per inference (ms){', ' + where if where else ''}",
           ylabel="test top-1 accuracy (%, from each artifact's parity.json)",
           title="Which artifact? Up and to the left is better")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", bbox_to_anchor=(1.02, 0.0), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.08, right=0.6, bottom=0.12, top=0.92)
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def _number_points(ax, points: list[dict]) -> None:
    """A number beside each point and, right of the plot, one key line per number (name, p50, accuracy):
    names written at the points overlap as soon as two artifacts are about as fast and as accurate."""
    ordered = sorted(points, key=lambda p: (p["p50_ms"], -p["accuracy"]))
    lines = []
    for number, point in enumerate(ordered, 1):
        x, y = point["p50_ms"], 100 * point["accuracy"]
        ax.annotate(str(number), (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8,
                    color="tab:blue" if point["best"] else "0.35", fontweight="bold" if point["best"] else None)
        lines.append(f"{number:>2}  {point['name']:<16} {x:7.2f} ms {y:6.1f}%{'  best' if point['best'] else ''}")
    ax.text(1.03, 1.0, "\n".join(lines), transform=ax.transAxes, va="top", ha="left", family="monospace",
            fontsize=8)
