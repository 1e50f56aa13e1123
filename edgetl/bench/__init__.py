"""`edgetl bench`: latency profiling of exported models through edgetl's runtime. No torch.

    run_bench(paths, threads=None, runs=None, seconds=None, warmup=10, batch=1, layers=False) -> report dict

The report also holds `device: {"before", "after"}`, the device's state (`device_state.read_state`)
read before the first model loads and after the last one's runs, and `warnings`, what changed
in between that slows the timings (a throttled Pi, a falling clock, a hot SoC, a governor that is
not `performance`). Each entry has its own `device` block (around its timed runs) and
`execution_device`, where it ran (cpu, cuda, GPU, ...).
"""

from __future__ import annotations

from pathlib import Path

from edgetl.bench.cpu import cpu_features
from edgetl.bench.device_state import compare_states, read_state
from edgetl.bench.measure import bench_model
from edgetl.bench.tradeoff import tradeoff
from edgetl.console import info
from edgetl.evaluation import fp32_ratios


def parity_accuracy(model_path: str) -> float | None:
    """The artifact's test accuracy from the parity summary it carries, when parity has run."""
    from edgetl.contract.artifact import read_parity

    summary = read_parity(Path(model_path).parent if Path(model_path).is_file() else Path(model_path))
    return summary.get("accuracy") if summary else None


def default_figure(paths: list[str]) -> Path:
    """Where `edgetl bench` puts its figures unless told: `bench.png` beside the artifact folders (their
    common parent, e.g. RUN_DIR/export/), never inside one and never in the working directory."""
    import os

    folders = [Path(p).resolve() if Path(p).is_dir() else Path(p).resolve().parent for p in paths]
    return Path(os.path.commonpath([f.parent for f in folders])) / "bench.png"


def run_bench(paths: list[str], threads: int | None | list[int | None] = None, runs: int | None = None,
              seconds: float | None = None, warmup: int = 10, batch: int | list[int] = 1, layers: bool = False,
              device: str | None = None, plot: str | Path | None = None, end_to_end: str | None = None) -> dict:
    """One entry per (model, threads, batch): a sweep is lists of threads and batches."""
    if plot:
        from edgetl import atomic

        atomic.check_target(plot, "figure")
    thread_settings = threads if isinstance(threads, list) else [threads]
    batch_settings = batch if isinstance(batch, list) else [batch]
    models = []
    before = read_state()
    for path in paths:
        for batch_size in batch_settings:
            for thread_count in thread_settings:
                at = f" at {thread_count} thread{'s' * (thread_count != 1)}" if thread_count else ""
                info(f"benchmarking {path}{at}" + (f", batch {batch_size}" if len(batch_settings) > 1 else "") + " ...")
                result = bench_model(path, threads=thread_count, runs=runs, seconds=seconds, warmup=warmup,
                                     batch=batch_size, device=device)
                result["accuracy"] = parity_accuracy(result["path"])
                if layers:
                    from edgetl.bench.layers import profile_layers

                    result["layers"] = profile_layers(path, threads=thread_count, device=device)
                if end_to_end:
                    from edgetl.bench.end_to_end import bench_end_to_end

                    result["end_to_end"] = bench_end_to_end(path, end_to_end, threads=thread_count, runs=runs,
                                                            seconds=seconds, device=device)
                models.append(result)
    for model, ratio in zip(models, fp32_ratios(models, "precision", "p50_ms", ("threads", "batch"))):
        model["vs_fp32"] = ratio if model["precision"] != "fp32" else None
    after = read_state()
    warnings = compare_states(before, after)
    warnings += [w for m in models for w in m["warnings"] if w not in warnings]
    report = {"cpu": cpu_features(), "device": {"before": before, "after": after}, "warnings": warnings,
              "models": models, "sweep": sweep_summary(models)}
    choice = tradeoff([m for m in models if m["threads"] == models[0]["threads"] and m["batch"] == models[0]["batch"]])
    if choice is not None:
        report["tradeoff"] = choice
    if plot:
        report["figures"] = figures(report, Path(plot), seconds)
        report["plot"] = report["figures"]["latency"]
    return report


def sweep_summary(models: list[dict]) -> list[dict]:
    """Per model with several settings: the fastest (threads, batch) by p50 per image."""
    by_model: dict[str, list[dict]] = {}
    for model in models:
        by_model.setdefault(model["path"], []).append(model)
    summary = []
    for path, rows in by_model.items():
        if len(rows) > 1:
            best = min(rows, key=lambda m: m["p50_ms"] / m["batch"])
            summary.append({"path": path, "best_threads": best["threads"], "best_batch": best["batch"],
                            "p50_ms_per_image": round(best["p50_ms"] / best["batch"], 4)})
    return summary


def figures(report: dict, plot: Path, seconds: float | None) -> dict:
    """bench.png always; the sweep, the sustained timeline and the accuracy-latency picture when they apply.
    A device or FIFO as `plot` (`--plot /dev/null`) gets the latency figure only: its siblings would be
    new files beside it (`/dev/null-sweep.png`)."""
    from edgetl import atomic
    from edgetl.bench.report import plot_latency, plot_sweep, plot_timeline
    from edgetl.bench.tradeoff import plot_tradeoff

    models = report["models"]
    made = {"latency": str(plot_latency(models, plot))}
    if atomic.is_special(plot):
        return made
    if report["sweep"]:
        made["sweep"] = str(plot_sweep(models, plot.with_name(plot.stem + "-sweep.png")))
    if seconds:
        made["timeline"] = str(plot_timeline(models, plot.with_name(plot.stem + "-timeline.png")))
    if report.get("tradeoff"):
        threads = models[0]["threads"]
        made["tradeoff"] = str(plot_tradeoff(report["tradeoff"], plot.with_name(plot.stem + "-tradeoff.png"),
                                             f"{threads} threads, batch {models[0]['batch']}, this machine"))
    return made
