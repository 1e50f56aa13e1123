"""The running classifier's health: what its heartbeat file and the live page's /status.json say.

One small JSON object, rebuilt at most once a second from the stream's counters: frames classified,
FPS now, inference latency p50/p99 over the recent window, frames below --min-confidence, the last
error (a broker that went away, a heartbeat that cannot be written), uptime, and which release and model run. A
deploy's health check reads `pid`, `model`, `frames` and `time` from the file (deploy/health.py);
`edgetl status` prints it for a device or a fleet. No torch.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edgetl.errors import BadInputError
from edgetl.runtime.stream import Result, StreamStats

SCHEMA = 1


def release_of(model_folder: str) -> str | None:
    """ROOT/releases/<id>/model -> <id>: the release a deployed service runs (None outside a deploy root)."""
    folder = Path(model_folder)
    return folder.parent.name if folder.parent.parent.name == "releases" else None


def write_volatile(path: Path, text: str) -> None:
    """Replace `path` atomically (readers see the old file or the new one, never half of one), without
    fsync: a liveness file rewritten every second needs no durability, and two fsyncs a second would
    wear a Raspberry Pi's SD card for nothing. One writer per file, so one fixed temporary name."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


class RunStatus:
    """Call it with each Result (it is a sink); `latest` is the last snapshot, safe to read from any thread."""

    INTERVAL_S = 1.0

    def __init__(self, stats: StreamStats, model_path: str | Path, source: str, heartbeat: str | Path | None = None,
                 min_confidence: float | None = None):
        model_path = Path(model_path)
        self.model = os.path.realpath(model_path.parent if model_path.is_file() else model_path)
        self.stats, self.source, self.min_confidence = stats, source, min_confidence
        self.heartbeat = Path(heartbeat) if heartbeat else None
        self.pid, self.started, self.started_clock = os.getpid(), time.time(), time.perf_counter()
        self.fps = 0.0
        self.last_error: dict | None = None
        self.reporters: dict[str, Callable[[], dict]] = {}  # e.g. "mqtt": the publisher's counters
        self.lock = threading.Lock()
        self.written = 0.0
        self.latest = self.snapshot()
        if self.heartbeat is not None:
            try:
                self.heartbeat.parent.mkdir(parents=True, exist_ok=True)
                self._write()  # at once: a service waiting for its camera is up, with 0 frames
            except OSError as exc:
                raise BadInputError(f"cannot write the heartbeat {self.heartbeat}: {exc.strerror or exc}",
                                    "choose a file in a writable folder with --heartbeat") from exc

    def error(self, message: str) -> None:
        """Remember the most recent problem the run survived (shown until a newer one replaces it)."""
        self.last_error = {"message": str(message)[:500], "time": round(time.time(), 3)}

    def problem(self, message: str) -> None:
        """A problem the run survives: warned on stderr when it is new (a broker down for an hour is one
        line, not thousands), and kept as the last error either way."""
        if not self.last_error or self.last_error["message"] != str(message)[:500]:
            from edgetl.console import warn

            warn(message)
        self.error(message)

    def snapshot(self) -> dict:
        stats = self.stats
        infer = list(stats.latencies["infer"])
        latency = ({"p50": round(float(np.percentile(infer, 50)), 3), "p99": round(float(np.percentile(infer, 99)), 3)}
                   if infer else None)
        out = {"schema": SCHEMA, "pid": self.pid, "model": self.model, "release": release_of(self.model),
               "source": self.source, "frames": stats.frames, "dropped": stats.dropped, "unknown": stats.unknown,
               "min_confidence": self.min_confidence, "fps": round(self.fps, 2), "infer_ms": latency,
               "last_error": self.last_error, "uptime_s": round(time.perf_counter() - self.started_clock, 1),
               "started": round(self.started, 3), "time": round(time.time(), 3)}
        for name, report in self.reporters.items():
            out[name] = report()
        return out

    def _write(self) -> None:
        with self.lock:
            self.latest = self.snapshot()
            self.written = time.perf_counter()
            if self.heartbeat is not None:
                write_volatile(self.heartbeat, json.dumps(self.latest) + "\n")

    def publish(self) -> None:
        """Rebuild the snapshot and rewrite the heartbeat file with it. A failed write (a full disk) is the
        run's last error, said once, and never stops the camera loop."""
        try:
            self._write()
        except OSError as exc:
            self.problem(f"cannot write the heartbeat {self.heartbeat}: {exc.strerror or exc}")

    def __call__(self, result: Result) -> None:
        self.fps = result.fps
        if self.stats.frames == 1 or time.perf_counter() - self.written >= self.INTERVAL_S:
            self.publish()

    def close(self) -> None:
        """The final counts, when the source ended or the run failed."""
        self.publish()
