"""Classifying a stream of frames with capture, preprocessing and inference overlapped.

Three stages joined by small bounded queues: a capture thread decodes frames, a
preprocessing thread resizes and normalises them, and the calling thread runs
inference and hands each result to the sinks (JSON lines, overlay, video file,
the live page). For live sources a full capture queue drops its oldest frame, so
results stay current instead of falling behind the camera; for files nothing is
dropped. Memory stays flat over long runs: nothing accumulates but counters and
a fixed-size window of latencies. No torch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgetl.runtime.base import Runner
from edgetl.runtime.sources import Frame, Source
from edgetl.runtime.timing import latency_stats

_END = object()
WINDOW = 2000  # latencies kept for the summary percentiles


@dataclass
class Result:
    frame: Frame
    topk: list[tuple[str, float]]
    latency_ms: dict[str, float]
    fps: float
    annotated: np.ndarray | None = field(default=None, repr=False)  # drawn once, shared by every sink
    min_confidence: float | None = None

    @property
    def label(self) -> str | None:
        """The top-1 class, or None ("unknown": never a class name, which is a non-empty string) when its
        probability is below `min_confidence`: a camera classifier must be able to say "not sure"."""
        name, score = self.topk[0]
        return None if self.min_confidence is not None and score < self.min_confidence else name


@dataclass
class StreamStats:
    frames: int = 0
    dropped: int = 0
    unknown: int = 0  # frames below --min-confidence
    started: float = field(default_factory=time.perf_counter)
    latencies: dict[str, deque] = field(default_factory=lambda: {k: deque(maxlen=WINDOW)
                                                                 for k in ("pre", "infer", "post")})

    def record(self, pre_ms: float, infer_ms: float, post_ms: float) -> None:
        """Count one classified frame and keep its stage latencies in the window."""
        self.frames += 1
        for stage, value in (("pre", pre_ms), ("infer", infer_ms), ("post", post_ms)):
            self.latencies[stage].append(value)

    def summary(self) -> dict:
        seconds = time.perf_counter() - self.started
        out = {"frames": self.frames, "dropped": self.dropped, "unknown": self.unknown, "seconds": round(seconds, 3),
               "fps": round(self.frames / seconds, 2) if seconds > 0 else None}
        for stage, values in self.latencies.items():
            if values:
                stats = latency_stats(list(values))
                out[f"{stage}_ms"] = {k: stats[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")}
        if self.latencies["infer"]:
            out["model_fps"] = round(1000.0 / float(np.mean(self.latencies["infer"])), 2)
        return out


def _put_latest(target: queue.Queue, item, stats: StreamStats) -> None:
    """Live sources: make room by dropping the oldest frame rather than waiting for it."""
    while True:
        try:
            target.put_nowait(item)
            return
        except queue.Full:
            try:
                target.get_nowait()
                stats.dropped += 1
            except queue.Empty:
                pass


class FrameRate:
    """Results per second over the last `window` results: what a viewer sees now, not the run's average."""

    def __init__(self, window: int = 30):
        self.recent: deque = deque(maxlen=window)

    def tick(self) -> float:
        self.recent.append(time.perf_counter())
        recent = self.recent
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0


class _FrameFeed:
    """The capture and preprocessing threads, and the bounded queues that join them to inference.

    A worker's exception is kept in `errors` and raised in the calling thread; `stop` ends both."""

    def __init__(self, runner: Runner, source: Source, stats: StreamStats, queue_size: int):
        self.runner, self.source, self.stats = runner, source, stats
        self.stop = threading.Event()
        self.captured: queue.Queue = queue.Queue(maxsize=queue_size)
        self.prepared: queue.Queue = queue.Queue(maxsize=queue_size)
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self.capture, daemon=True, name="edgetl-capture"),
                        threading.Thread(target=self.preprocess, daemon=True, name="edgetl-preprocess")]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def blocking_put(self, target: queue.Queue, item) -> bool:
        """Wait for room in `target` (nothing dropped), giving up once the stream is stopped."""
        while not self.stop.is_set():
            try:
                target.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def capture(self) -> None:
        source = self.source
        try:
            for frame in source.frames():
                if self.stop.is_set():
                    break
                if source.live:
                    _put_latest(self.captured, frame, self.stats)
                elif not self.blocking_put(self.captured, frame):
                    break
        except BaseException as exc:  # surfaced in the main thread
            self.errors.append(exc)
        finally:
            if source.live:
                _put_latest(self.captured, _END, self.stats)
            else:
                self.blocking_put(self.captured, _END)

    def preprocess(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    frame = self.captured.get(timeout=0.1)
                except queue.Empty:
                    continue
                if frame is _END:
                    break
                start = time.perf_counter()
                tensor = self.runner.preprocess(frame.image)
                if not self.blocking_put(self.prepared, (frame, tensor, (time.perf_counter() - start) * 1000)):
                    break
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.blocking_put(self.prepared, _END)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=2)
        self.source.close()


def _classify(runner: Runner, prepared: tuple, topk: int, rate: FrameRate, stats: StreamStats,
              min_confidence: float | None) -> Result:
    """Inference and top-k on one preprocessed frame, timed and counted."""
    frame, tensor, pre_ms = prepared
    start = time.perf_counter()
    logits = runner.infer(tensor)
    infer_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    top = runner.topk(logits, topk)[0]
    post_ms = (time.perf_counter() - start) * 1000
    fps = rate.tick()
    stats.record(pre_ms, infer_ms, post_ms)
    result = Result(frame, top, {"pre": round(pre_ms, 3), "infer": round(infer_ms, 3), "post": round(post_ms, 3)},
                    fps, min_confidence=min_confidence)
    if result.label is None:
        stats.unknown += 1
    return result


def run_stream(runner: Runner, source: Source, topk: int = 3, max_frames: int | None = None,
               on_result: Callable[[Result], None] | None = None, queue_size: int = 4,
               min_confidence: float | None = None, stats: StreamStats | None = None) -> dict:
    """Classify `source` until it ends or `max_frames` results, handing each to `on_result`; the summary.
    `stats`: counters the caller reads while the stream runs (the heartbeat)."""
    stats = stats or StreamStats()
    feed = _FrameFeed(runner, source, stats, queue_size)
    feed.start()
    rate = FrameRate()
    try:
        while max_frames is None or stats.frames < max_frames:
            item = feed.prepared.get()
            if item is _END:
                break
            result = _classify(runner, item, topk, rate, stats, min_confidence)
            if on_result is not None:
                on_result(result)
        if feed.errors:
            raise feed.errors[0]
    finally:
        feed.close()
    return stats.summary()
