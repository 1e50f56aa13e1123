"""One measured attempt of the gate, and the quick latency the export table shows.

A `Trial` keeps its scratch folder only while it may still be delivered: the
gate discards every attempt it will not publish as soon as a better one is
measured, so a search over many recipes never holds more than two artifacts.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from edgetl.export import gate
from edgetl.runtime.sidecar import Sidecar


@dataclass
class Trial:
    """One measured attempt: its record, and while it may still be delivered, its scratch folder."""

    attempt: gate.Attempt
    record: dict
    scratch: Path | None = None
    sidecar: Sidecar | None = None
    metrics: dict | None = None

    def discard(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def accept(self) -> "Trial":
        self.record["status"] = "accepted"
        return self


def p50_ms(runner, runs: int = 60) -> float:
    """A quick batch-1 latency on the export host (default threads): enough for the int8/fp32 ratio in the
    export table; `edgetl bench` is the measurement to trust."""
    import numpy as np

    shape = [1 if not isinstance(d, int) else d for d in runner.sidecar.input.shape]
    batch = np.zeros(shape, np.float32)
    if runner.sidecar.input.dtype != "float32":
        batch = runner.sidecar.preprocess.normalize(np.zeros([1, *runner.sidecar.preprocess.size, 3], np.uint8))
    for _ in range(5):
        runner.infer(batch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.infer(batch)
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 3)
