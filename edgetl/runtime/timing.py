"""Timing a runner: one example input, one timed loop and one set of latency statistics, shared by
`edgetl bench`, export and `edgetl run`. No torch.

Export shows a quick p50 per artifact (for the int8/fp32 ratio in its table);
`edgetl bench` measures properly (load, first inference, percentiles, memory).
Both time the same input the same way, so their numbers are comparable.
"""

from __future__ import annotations

import time

import numpy as np


def example_input(runner, batch: int) -> np.ndarray:
    """A real input for the runner: its first golden image (else seeded noise), preprocessed, repeated."""
    sidecar = runner.sidecar
    if sidecar.golden:
        one = runner.preprocess(runner.model_path.parent / sidecar.golden[0].file)
    else:
        height, width = sidecar.preprocess.size
        rng = np.random.default_rng(0)
        one = sidecar.preprocess.normalize(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return np.repeat(one, batch, axis=0)


def timed_runs(runner, inputs: np.ndarray, runs: int | None, seconds: float | None = None,
               warmup: int = 0, starts: list[float] | None = None) -> list[float]:
    """Milliseconds per `runner.infer(inputs)`, for `runs` calls or until `seconds` have passed.

    `starts`, when given, receives each run's start in seconds from the first timed run (for a
    latency-over-time timeline)."""
    for _ in range(warmup):
        runner.infer(inputs)
    samples: list[float] = []
    origin = time.perf_counter_ns()
    deadline = time.perf_counter() + seconds if seconds else None
    while (runs is None or len(samples) < runs) and (deadline is None or time.perf_counter() < deadline):
        start = time.perf_counter_ns()
        runner.infer(inputs)
        samples.append((time.perf_counter_ns() - start) / 1e6)
        if starts is not None:
            starts.append((start - origin) / 1e9)
    return samples


def per_second(samples_ms: list[float], starts: list[float]) -> list[dict]:
    """The timeline of a sustained run: p50 and count of the runs that started in each whole second."""
    buckets: dict[int, list[float]] = {}
    for value, start in zip(samples_ms, starts):
        buckets.setdefault(int(start), []).append(value)
    return [{"second": second, "runs": len(values), "p50_ms": round(float(np.median(values)), 4)}
            for second, values in sorted(buckets.items())]


SLOWDOWN = 0.10  # the end of a sustained run this much slower than its start earns a warning


def slowdown(timeline: list[dict]) -> float | None:
    """How much slower the last tenth of a sustained run is than its first tenth (0.25 = 25% slower),
    on whole seconds only; None for runs shorter than three seconds."""
    full = timeline[:-1] if len(timeline) > 1 else timeline  # the last second is usually partial
    if len(full) < 3:
        return None
    part = max(1, len(full) // 10)
    start = float(np.median([t["p50_ms"] for t in full[:part]]))
    end = float(np.median([t["p50_ms"] for t in full[-part:]]))
    return round(end / start - 1.0, 4) if start > 0 else None


def quick_p50_ms(runner, runs: int = 60, warmup: int = 5) -> float:
    """A quick batch-1 median latency (ms) at the runner's threads."""
    return round(float(np.median(timed_runs(runner, example_input(runner, 1), runs, warmup=warmup))), 3)


PERCENTILES = (50, 90, 95, 99)


def latency_stats(samples_ms: list[float] | np.ndarray) -> dict:
    """min/p50/p90/p95/p99/max/mean/std (linear-interpolated percentiles, population std)."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no timed runs")
    stats = {"min_ms": float(values.min())}
    for p in PERCENTILES:
        stats[f"p{p}_ms"] = float(np.percentile(values, p))
    stats.update(max_ms=float(values.max()), mean_ms=float(values.mean()), std_ms=float(values.std()),
                 runs=int(values.size))
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in stats.items()}
