#!/usr/bin/env python
"""Soak test of the device runtime: many frames through `edgetl run`'s pipeline, memory and FPS.

Feeds FRAMES frames (a video file, or the artifact's golden images cycled) through
run_stream with the JSON-lines serialisation and the annotated-frame encoding a live
page would do, and reports RSS at the start, after warm-up and at the end (target:
growth < 5 MB over 10,000 frames), plus pipeline FPS against model-only FPS
(target: >= 90%).

    python scripts/soak_run.py ARTIFACT_DIR [--frames 10000] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

from edgetl.bench.measure import bench_model, status_mb
from edgetl.runtime import load, resolve_model_file
from edgetl.runtime.sinks import annotate, json_line
from edgetl.runtime.sources import Frame, ImageSource, Source
from edgetl.runtime.stream import run_stream


class CycledImages(Source):
    """The golden images over and over, like a file source (nothing dropped)."""

    description = "golden images, cycled"

    def __init__(self, folder: Path, count: int):
        self.images = [f.image for f in ImageSource(sorted(folder.glob("*.png")), str(folder)).frames()]
        self.count = count

    def frames(self):
        for index, image in zip(range(self.count), itertools.cycle(self.images)):
            yield Frame(index, "golden", time.time(), image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact")
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    model_file = resolve_model_file(args.artifact)
    model_only = bench_model(model_file, threads=args.threads, runs=500, warmup=20)
    runner = load(model_file, threads=args.threads)
    rss = {"start": status_mb("VmRSS")}
    checkpoints = {max(1, args.frames // 10): "after_warmup"}

    def sink(result) -> None:
        json_line(result)
        annotate(result)
        if result.frame.index + 1 in checkpoints:
            rss[checkpoints[result.frame.index + 1]] = status_mb("VmRSS")

    summary = run_stream(runner, CycledImages(model_file.parent / "golden", args.frames), on_result=sink)
    rss["end"] = status_mb("VmRSS")
    report = {
        "artifact": str(model_file), "frames": summary["frames"], "threads": args.threads,
        "rss_mb": {k: round(v, 1) for k, v in rss.items()},
        "rss_growth_after_warmup_mb": round(rss["end"] - rss["after_warmup"], 2),
        "pipeline_fps": summary["fps"], "model_only_fps": model_only["fps"],
        "fps_ratio": round(summary["fps"] / model_only["fps"], 3), "dropped": summary["dropped"],
    }
    print(f"{report['frames']} frames: RSS {report['rss_mb']} MB, growth after warm-up "
          f"{report['rss_growth_after_warmup_mb']} MB; pipeline {report['pipeline_fps']} FPS vs model-only "
          f"{report['model_only_fps']} FPS ({report['fps_ratio']:.0%})", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
