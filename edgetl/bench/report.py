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


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height))


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def plot_sweep(models: list[dict], path: Path) -> Path:
    """bench-sweep.png: p50 per image against threads, one line per model and batch size."""
    plt, fig, ax = _figure(8, 5)
    lines: dict[tuple[str, int], list[dict]] = {}
    for model in models:
        lines.setdefault((label(model), model["batch"]), []).append(model)
    for (name, batch), rows in lines.items():
        rows = sorted(rows, key=lambda m: m["threads"] or 0)
        ax.plot([m["threads"] for m in rows], [m["p50_ms"] / batch for m in rows], "-o",
                label=f"{name}" + (f", batch {batch}" if batch != 1 else ""))
    ax.set(xlabel="threads", ylabel="p50 latency per image (ms)", title="edgetl bench: thread and batch sweep")
    ax.set_xticks(sorted({m["threads"] for m in models if m["threads"]}))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_timeline(models: list[dict], path: Path) -> Path:
    """bench-timeline.png: p50 per second of a sustained run, where throttling shows as a rising line."""
    plt, fig, ax = _figure(9, 4.8)
    for model in models:
        timeline = model.get("timeline") or []
        ax.plot([t["second"] for t in timeline], [t["p50_ms"] for t in timeline], "-",
                label=f"{label(model)}, {model['threads']} threads" + (f", batch {model['batch']}"
                                                                       if model["batch"] != 1 else ""))
    ax.set(xlabel="seconds into the timed run", ylabel="p50 latency in that second (ms)",
           title="edgetl bench --seconds: latency over time (a rising line is a device slowing down)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)
