"""Where results go: JSON lines, an annotated video file, a window, the live page. No torch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from edgetl.errors import BadInputError, require
from edgetl.runtime.sources import redact_url
from edgetl.runtime.stream import Result


def json_line(result: Result) -> str:
    """One result as JSON (also what /predictions.json serves).

    The source is redacted again here: sources already redact their description, but a
    Frame built elsewhere (scripts, other sources) must not carry stream credentials out.
    """
    return json.dumps({
        "frame": result.frame.index, "source": redact_url(result.frame.name), "ts": round(result.frame.ts, 6),
        "topk": [[label, round(score, 6)] for label, score in result.topk], "latency_ms": result.latency_ms,
    })


def annotate(result: Result) -> np.ndarray:
    """The frame (BGR) with top-k labels, scores, inference latency and FPS drawn on it.

    Drawn once per result: --save, --show and --serve together share the same image
    (sinks read it, none draws on it).
    """
    if result.annotated is not None:
        return result.annotated
    cv2 = require("cv2", "device", "drawing overlays")
    frame = result.frame.bgr
    if frame is None:
        frame = np.asarray(result.frame.image)[:, :, ::-1]
    frame = np.array(frame, order="C")  # a private, contiguous copy to draw on
    scale = max(0.4, min(frame.shape[:2]) / 480)
    thickness = max(1, int(round(scale * 1.5)))
    lines = [f"{label} {score:.2f}" for label, score in result.topk]
    lines.append(f"{result.latency_ms['infer']:.1f} ms  {result.fps:.1f} FPS")
    y = int(24 * scale) + 4
    for number, text in enumerate(lines):
        colour = (0, 255, 0) if number == 0 else (255, 255, 255)
        cv2.putText(frame, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(frame, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, colour, thickness, cv2.LINE_AA)
        y += int(24 * scale)
    result.annotated = frame
    return frame


class VideoSink:
    """--save OUT.mp4: every annotated frame, at the source's frame rate."""

    def __init__(self, path: str | Path, fps: float | None):
        self.cv2 = require("cv2", "device", "writing video")
        self.path, self.fps = Path(path), fps or 15.0
        self.writer = None

    def __call__(self, result: Result) -> None:
        frame = annotate(result)
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = self.cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix.lower() == ".mp4" else "MJPG"))
            self.size = (frame.shape[1], frame.shape[0])
            self.writer = self.cv2.VideoWriter(str(self.path), fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                raise BadInputError(f"cannot write video {self.path}", "use an .mp4 or .avi path in a writable folder")
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = self.cv2.resize(frame, self.size)
        self.writer.write(frame)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


class WindowSink:
    """--show: an OpenCV window (needs a display and an OpenCV build with GUI support)."""

    def __init__(self):
        self.cv2 = require("cv2", "device", "showing a window")
        try:
            self.cv2.namedWindow("edgetl", self.cv2.WINDOW_NORMAL)
        except self.cv2.error as exc:
            raise BadInputError("cannot open a window here (no display, or opencv-python-headless)",
                                "use --serve PORT to watch from a browser, or --save out.mp4") from exc

    def __call__(self, result: Result) -> None:
        self.cv2.imshow("edgetl", annotate(result))
        if self.cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            raise KeyboardInterrupt

    def close(self) -> None:
        self.cv2.destroyAllWindows()


class JsonLinesSink:
    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def __call__(self, result: Result) -> None:
        self.stream.write(json_line(result) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class HeartbeatSink:
    """A small JSON file the service rewrites (atomically) at most once a second while it classifies:
    {"pid", "model", "frames", "time"}. A deploy reads it to know that the release it switched to really
    serves: the process is up, frames are being classified, and the model is the new release's (`model`
    is the resolved folder, ROOT/releases/<id>/model, not the `current` link)."""

    INTERVAL_S = 1.0

    def __init__(self, path: str | Path, model_path: str | Path):
        import os

        self.path, self.pid = Path(path), os.getpid()
        self.model = os.path.realpath(Path(model_path).parent if Path(model_path).is_file() else model_path)
        self.frames, self.written = 0, 0.0

    def __call__(self, result: Result) -> None:
        import time

        self.frames += 1
        now = time.time()
        if self.frames == 1 or now - self.written >= self.INTERVAL_S:
            self._write(now)

    def _write(self, now: float) -> None:
        from edgetl import atomic

        atomic.write_json(self.path, {"pid": self.pid, "model": self.model, "frames": self.frames, "time": now})
        self.written = now

    def close(self) -> None:
        """The last count, when the source ended (a folder of images, a video file)."""
        import time

        if self.frames:
            self._write(time.time())
