"""Latency statistics over timed runs (milliseconds)."""

from __future__ import annotations

import numpy as np

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
