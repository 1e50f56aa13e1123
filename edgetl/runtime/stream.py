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


@dataclass
class StreamStats:
    frames: int = 0
    dropped: int = 0
    started: float = field(default_factory=time.perf_counter)
    latencies: dict[str, deque] = field(default_factory=lambda: {k: deque(maxlen=WINDOW)
                                                                 for k in ("pre", "infer", "post")})

    def summary(self) -> dict:
        seconds = time.perf_counter() - self.started
        out = {"frames": self.frames, "dropped": self.dropped, "seconds": round(seconds, 3),
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


def run_stream(runner: Runner, source: Source, topk: int = 3, max_frames: int | None = None,
               on_result: Callable[[Result], None] | None = None, queue_size: int = 4) -> dict:
    stats = StreamStats()
    stop = threading.Event()
    captured: queue.Queue = queue.Queue(maxsize=queue_size)
    prepared: queue.Queue = queue.Queue(maxsize=queue_size)
    errors: list[BaseException] = []

    def blocking_put(target: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                target.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def capture() -> None:
        try:
            for frame in source.frames():
                if stop.is_set():
                    break
                if source.live:
                    _put_latest(captured, frame, stats)
                elif not blocking_put(captured, frame):
                    break
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
        finally:
            if source.live:
                _put_latest(captured, _END, stats)
            else:
                blocking_put(captured, _END)

    def preprocess() -> None:
        try:
            while not stop.is_set():
                try:
                    frame = captured.get(timeout=0.1)
                except queue.Empty:
                    continue
                if frame is _END:
                    break
                start = time.perf_counter()
                tensor = runner.preprocess(frame.image)
                if not blocking_put(prepared, (frame, tensor, (time.perf_counter() - start) * 1000)):
                    break
        except BaseException as exc:
            errors.append(exc)
        finally:
            blocking_put(prepared, _END)

    threads = [threading.Thread(target=capture, daemon=True, name="edgetl-capture"),
               threading.Thread(target=preprocess, daemon=True, name="edgetl-preprocess")]
    for thread in threads:
        thread.start()
    recent: deque = deque(maxlen=30)
    try:
        while max_frames is None or stats.frames < max_frames:
            item = prepared.get()
            if item is _END:
                break
            frame, tensor, pre_ms = item
            start = time.perf_counter()
            logits = runner.infer(tensor)
            infer_ms = (time.perf_counter() - start) * 1000
            start = time.perf_counter()
            top = runner.topk(logits, topk)[0]
            post_ms = (time.perf_counter() - start) * 1000
            now = time.perf_counter()
            recent.append(now)
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
            stats.frames += 1
            for stage, value in (("pre", pre_ms), ("infer", infer_ms), ("post", post_ms)):
                stats.latencies[stage].append(value)
            if on_result is not None:
                on_result(Result(frame, top, {"pre": round(pre_ms, 3), "infer": round(infer_ms, 3),
                                              "post": round(post_ms, 3)}, fps))
        if errors:
            raise errors[0]
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=2)
        source.close()
    return stats.summary()
