#!/usr/bin/env python
"""Video FPS of `edgetl run` against the model-only FPS of `edgetl bench`, per thread count.

For each artifact and each inference thread count (1 .. cores):
  model-only   bench_model: Runner.infer in a loop (what `edgetl bench` prints)
  pipeline     run_stream on a 640x480 video file, JSON lines written (what `edgetl run` does)
  sequential   decode -> preprocess -> infer in one thread, no overlap (the baseline the
               pipeline must beat)
plus the CPU cost of decoding and preprocessing one frame, and the ceiling a perfect
overlap could reach when inference already uses every core:
  ceiling FPS = cores / (threads * infer_ms + frame_cpu_ms) * 1000   (threads = cores)
Target (issue 5): pipeline >= 90% of model-only FPS.

    python scripts/bench_stream.py ARTIFACT_DIR... [--video clip.mp4] [--frames 300] [--json]

Without --video, a clip is written from scikit-image photos (a slow pan, mp4v).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgetl.bench.measure import bench_model
from edgetl.runtime import load, resolve_model_file
from edgetl.runtime.sinks import json_line
from edgetl.runtime.sources import open_source
from edgetl.runtime.stream import run_stream


def write_clip(path: Path, frames: int, size=(640, 480)) -> Path:
    """A pan across real photos, so decoding and resizing see natural images."""
    import cv2
    import skimage.data
    from PIL import Image

    photos = [np.asarray(Image.fromarray(getattr(skimage.data, n)()).convert("RGB").resize((960, 720)))
              for n in ("chelsea", "coffee", "astronaut", "rocket")]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, size)
    for index in range(frames):
        photo = photos[(index * len(photos)) // frames]
        offset = (index * 7) % (960 - size[0])
        writer.write(np.ascontiguousarray(photo[100:100 + size[1], offset:offset + size[0], ::-1]))
    writer.release()
    return path


def frame_cpu_ms(runner, video: Path, frames: int) -> float:
    """Decode + RGB conversion + preprocessing of one frame, as the pipeline does it, no inference."""
    source, count, started = open_source(str(video)), 0, time.process_time()
    for frame in source.frames():
        runner.preprocess(frame.image)
        count += 1
        if count >= frames:
            break
    source.close()
    return (time.process_time() - started) * 1000 / max(count, 1)


def sequential_fps(runner, video: Path, frames: int) -> float:
    source, count, started = open_source(str(video)), 0, time.perf_counter()
    for frame in source.frames():
        runner.topk(runner.infer(runner.preprocess(frame.image)), 3)
        count += 1
        if count >= frames:
            break
    source.close()
    return count / (time.perf_counter() - started)


def pipeline_fps(runner, video: Path, frames: int) -> dict:
    sink = io.StringIO()

    def on_result(result) -> None:
        sink.write(json_line(result) + "\n")
        if sink.tell() > 1 << 20:
            sink.seek(0)
            sink.truncate()

    return run_stream(runner, open_source(str(video)), max_frames=frames, on_result=on_result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="+")
    parser.add_argument("--video")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(args.video) if args.video else write_clip(Path(tmp) / "clip.mp4", args.frames)
        rows = []
        for path in args.artifacts:
            model_file = resolve_model_file(path)
            for threads in range(1, cores + 1):
                runner = load(model_file, threads=threads)
                for _ in range(10):
                    runner.infer(runner.preprocess(runner.model_path.parent / runner.sidecar.golden[0].file))
                # Model-only before and after the streams: the VM's speed drifts, the mean of both brackets it.
                before = bench_model(model_file, threads=threads, runs=200, warmup=10)
                cpu = frame_cpu_ms(runner, video, min(args.frames, 150))
                stream = pipeline_fps(runner, video, args.frames)
                sequential = sequential_fps(runner, video, args.frames)
                after = bench_model(model_file, threads=threads, runs=200, warmup=10)
                model = {**after, "fps": round((before["fps"] + after["fps"]) / 2, 2),
                         "mean_ms": (before["mean_ms"] + after["mean_ms"]) / 2}
                row = {"artifact": str(path), "format": model["format"], "precision": model["precision"],
                       "threads": threads, "cores": cores, "model_only_fps": model["fps"],
                       "pipeline_fps": stream["fps"], "sequential_fps": round(sequential, 2),
                       "ratio": round(stream["fps"] / model["fps"], 3),
                       "sequential_ratio": round(sequential / model["fps"], 3),
                       "frame_cpu_ms": round(cpu, 2), "infer_ms_in_pipeline": stream["infer_ms"]["p50_ms"]}
                if threads == cores:
                    ceiling = cores * 1000 / (threads * model["mean_ms"] + cpu)
                    row["ceiling_ratio"] = round(ceiling / model["fps"], 3)
                rows.append(row)
                ceiling = f", perfect-overlap ceiling {row['ceiling_ratio']:.0%}" if "ceiling_ratio" in row else ""
                print(f"{Path(path).name:16s} threads {threads}: model-only {row['model_only_fps']:6.1f} FPS | "
                      f"pipeline {row['pipeline_fps']:6.1f} ({row['ratio']:.0%}) | sequential "
                      f"{row['sequential_fps']:6.1f} ({row['sequential_ratio']:.0%}) | decode+preprocess "
                      f"{row['frame_cpu_ms']:.2f} ms CPU/frame{ceiling}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
