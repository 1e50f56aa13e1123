"""The gate's speed check: an int8 artifact must not be slower than its format's fp32 on this host.

int8 exists to be faster; one that is slower than the float model it replaces is a
regression whatever its accuracy (MobileNetV3's hard-swish once made TFLite int8 3.6x
slower than fp32 here). So every gated int8 attempt is timed against the same format's
fp32 graph, in the same process, at the same threads, in interleaved rounds (a drifting
neighbour on a VM hits both alike), and the median of the per-round p50s decides.

The export host is a proxy for the device: int8 kernels differ between CPUs (VNNI, AMX,
Arm dot-product), so `edgetl deploy --pick fastest` measures on the device itself.
"""

from __future__ import annotations

import platform
import statistics

import numpy as np

from edgetl.runtime.timing import timed_runs

SLOWER_THAN = 1.0  # int8 p50 / fp32 p50 above this is a gate miss
ROUNDS, RUNS, WARMUP = 5, 30, 5


def host_cpu() -> str:
    """The CPU the ratio was measured on, for the record (a ratio means nothing without it)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compare(candidate, reference, pixels: np.ndarray) -> dict:
    """p50 of two loaded runners (int8, fp32) on one evaluation-cut image (1, H, W, 3), in interleaved
    rounds: {"p50_ms", "fp32_p50_ms", "ratio", "threads", "rounds", "host"}."""
    inputs = {id(r): r.sidecar.preprocess.normalize(pixels) for r in (candidate, reference)}
    rounds: dict[int, list[float]] = {id(candidate): [], id(reference): []}
    for _ in range(ROUNDS):
        for runner in (candidate, reference):
            samples = timed_runs(runner, inputs[id(runner)], RUNS, warmup=WARMUP)
            rounds[id(runner)].append(statistics.median(samples))
    p50, fp32 = statistics.median(rounds[id(candidate)]), statistics.median(rounds[id(reference)])
    return {"p50_ms": round(p50, 4), "fp32_p50_ms": round(fp32, 4), "ratio": round(p50 / fp32, 3),
            "threads": getattr(candidate, "threads", None), "rounds": ROUNDS, "host": host_cpu()}


def too_slow(record: dict | None) -> bool:
    return bool(record) and record["ratio"] > SLOWER_THAN


def all_too_slow(attempts: list[dict]) -> bool:
    """Whether speed alone refused int8: every timed int8 attempt ran slower than fp32."""
    timed = [a["speed"] for a in attempts if a.get("speed")]
    return bool(timed) and all(too_slow(record) for record in timed)


def miss(record: dict) -> str:
    """The gate's one line for a slow int8."""
    return (f"int8 is {record['ratio']:.2f}x the fp32 latency here (p50 {record['p50_ms']:.3f} vs "
            f"{record['fp32_p50_ms']:.3f} ms, {record['threads']} threads): slower than the float model")
