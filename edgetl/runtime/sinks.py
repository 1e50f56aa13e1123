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
    return json.dumps(result_object(result))


def result_object(result: Result) -> dict:
    """What every sink reports of one frame. `label` is the top-1 class, or null with `unknown: true`
    when its probability is below --min-confidence (null can never be a class name)."""
    return {
        "frame": result.frame.index, "source": redact_url(result.frame.name), "ts": round(result.frame.ts, 6),
        "label": result.label, "unknown": result.label is None,
        "topk": [[label, round(score, 6)] for label, score in result.topk], "latency_ms": result.latency_ms,
    }


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
    first = (0, 255, 0)  # green: the top-1 class is reported
    if result.label is None:
        lines.insert(0, f"unknown (below {result.min_confidence:.2f})")
        first = (0, 165, 255)  # orange: not sure
    lines.append(f"{result.latency_ms['infer']:.1f} ms  {result.fps:.1f} FPS")
    y = int(24 * scale) + 4
    for number, text in enumerate(lines):
        colour = first if number == 0 else (255, 255, 255)
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
