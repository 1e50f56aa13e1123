"""Measuring one model the way benchmark_app and benchmark_model do, through edgetl's runtime.

Load time, first inference, warm-up, then timed runs (a count or a duration) of
`Runner.infer` on a real preprocessed image (a golden sample when the artifact has
one). Peak RSS is read from /proc (VmHWM, reset before each model where the kernel
allows), so several models in one process are measured separately. No torch.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgetl.bench.device_state import compare_states, read_state
from edgetl.contract.sidecar import Sidecar
from edgetl.runtime import load, resolve_model_file
from edgetl.runtime.timing import SLOWDOWN, example_input, latency_stats, per_second, slowdown, timed_runs

DEFAULT_RUNS = 100


def status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def size_mb(model_file: Path, sidecar: Sidecar) -> float:
    return round(sidecar.model_bytes(model_file.parent) / 1e6, 3)


def bench_model(path: str | Path, threads: int | None = None, runs: int | None = None, seconds: float | None = None,
                warmup: int = 10, batch: int = 1, device: str | None = None) -> dict:
    model_file = resolve_model_file(path)
    peak_reset = _reset_peak()
    baseline = status_mb("VmRSS") or 0.0
    started = time.perf_counter()
    runner = load(model_file, threads=threads, device=device)
    load_ms = (time.perf_counter() - started) * 1000
    inputs = example_input(runner, batch)
    started = time.perf_counter()
    runner.infer(inputs)
    first_ms = (time.perf_counter() - started) * 1000
    if runs is None and seconds is None:
        runs = DEFAULT_RUNS
    starts: list[float] = []
    before = read_state()
    samples = timed_runs(runner, inputs, runs, seconds, warmup, starts=starts)
    after = read_state()
    peak = status_mb("VmHWM")
    stats = latency_stats(samples)
    sidecar = runner.sidecar
    timeline = per_second(samples, starts)
    warnings = compare_states(before, after)
    slower = slowdown(timeline)
    if slower is not None and slower > SLOWDOWN:
        warnings.append(f"{model_file.parent.name}: the end of the run was {100 * slower:.0f}% slower than its start "
                        f"(p50 per second, {len(timeline)} s): the device throttled or something else took the "
                        "CPU; see the device block, cool it or give it more time to settle")
    return {
        "path": str(model_file), "format": sidecar.format, "precision": sidecar.precision,
        "backend": runner.backend, "threads": runner.threads, "execution_device": device or "cpu", "batch": batch,
        "load_ms": round(load_ms, 2), "first_ms": round(first_ms, 3), **stats,
        "fps": round(batch * 1000.0 / stats["mean_ms"], 2),
        "rss_peak_mb": round(max(0.0, (peak or baseline) - baseline), 1) if peak_reset else None,
        "size_mb": size_mb(model_file, sidecar), "samples_ms": [round(s, 4) for s in samples],
        "timeline": timeline, "slowdown": slower, "device": {"before": before, "after": after}, "warnings": warnings,
    }
