"""bench.png: the latency distribution of each model, where a mean hides the tail."""

from __future__ import annotations

from pathlib import Path

from edgetl import atomic


def label(model: dict) -> str:
    return f"{Path(model['path']).parent.name}/{Path(model['path']).name}"


def plot_latency(models: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.6 * len(models) + 2.2))
    names = [label(m) for m in models]
    ax.boxplot([m["samples_ms"] for m in models], vert=False, tick_labels=names, showfliers=True,
               whis=(1, 99), flierprops={"markersize": 3})
    for row, model in enumerate(models, start=1):
        ax.annotate(f"p50 {model['p50_ms']:.2f}  p99 {model['p99_ms']:.2f} ms", (model["p99_ms"], row),
                    xytext=(6, 6), textcoords="offset points", fontsize=8)
    ax.set_xlim(right=max(max(m["samples_ms"]) for m in models) * 1.3)  # room for the labels
    ax.set(xlabel="latency per inference (ms); whiskers p1-p99", title="edgetl bench")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path
