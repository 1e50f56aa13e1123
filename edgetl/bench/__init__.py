"""`edgetl bench`: latency profiling of exported models through edgetl's runtime. No torch.

    run_bench(paths, threads=None, runs=None, seconds=None, warmup=10, batch=1, layers=False) -> report dict

The report also holds `device: {"before", "after"}`, the device's state (`device_state.read_state`)
read before the first model loads and after the last one's runs, and `warnings`, what changed
in between that slows the timings (a throttled Pi, a falling clock, a hot SoC, a governor that is
not `performance`). Each model's own `device` is the execution device it ran on.
"""

from __future__ import annotations

from pathlib import Path

from edgetl.bench.cpu import cpu_features
from edgetl.bench.device_state import compare_states, read_state
from edgetl.bench.measure import bench_model
from edgetl.console import info
from edgetl.evaluation import fp32_ratios


def parity_accuracy(model_path: str) -> float | None:
    """The artifact's test accuracy from the parity summary it carries, when parity has run."""
    from edgetl.contract.artifact import read_parity

    summary = read_parity(Path(model_path).parent if Path(model_path).is_file() else Path(model_path))
    return summary.get("accuracy") if summary else None


def run_bench(paths: list[str], threads: int | None = None, runs: int | None = None, seconds: float | None = None,
              warmup: int = 10, batch: int = 1, layers: bool = False, device: str | None = None,
              plot: str | Path | None = None) -> dict:
    models = []
    before = read_state()
    for path in paths:
        info(f"benchmarking {path} ...")
        result = bench_model(path, threads=threads, runs=runs, seconds=seconds, warmup=warmup, batch=batch,
                             device=device)
        result["accuracy"] = parity_accuracy(result["path"])
        if layers:
            from edgetl.bench.layers import profile_layers

            result["layers"] = profile_layers(path, threads=threads, device=device)
        models.append(result)
    for model, ratio in zip(models, fp32_ratios(models, "precision", "p50_ms")):
        model["vs_fp32"] = ratio if model["precision"] != "fp32" else None
    after = read_state()
    report = {"cpu": cpu_features(), "device": {"before": before, "after": after},
              "warnings": compare_states(before, after), "models": models}
    if plot:
        from edgetl.bench.report import plot_latency

        report["plot"] = str(plot_latency(models, Path(plot)))
    return report
