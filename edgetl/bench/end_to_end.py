"""`edgetl bench --end-to-end IMAGE|FOLDER`: where the time of one answer goes, stage by stage.

A model's p50 is not what a camera application waits for: decoding the file, the
resize/crop and normalisation, and reading the top-k out of the logits come around it,
and on a small board they can cost as much as the network. This times the four stages
separately on real images, one at a time, in the order `edgetl run` runs them and with
its names (decode, pre, infer, post), so the two reports read alike. No torch.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from edgetl.contract.images import UnreadableImageError, load_rgb
from edgetl.data.folder import list_images
from edgetl.errors import BadInputError
from edgetl.runtime import load
from edgetl.runtime.timing import example_input, latency_stats

STAGES = ("decode", "pre", "infer", "post", "total")
DEFAULT_RUNS = 100


def _images(source: str | Path) -> list[Path]:
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = [path / sample.path for sample in list_images(path)]
        if found:
            return found
    raise BadInputError(f"--end-to-end {source}: no image there", "give an image file or a folder of images")


def bench_end_to_end(model: str | Path, source: str | Path, threads: int | None = None, runs: int | None = None,
                     seconds: float | None = None, device: str | None = None, topk: int = 5) -> dict:
    runner = load(model, threads=threads, device=device)
    images = _images(source)
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    runs = runs or (None if seconds else DEFAULT_RUNS)
    deadline = time.perf_counter() + seconds if seconds else None
    runner.infer(example_input(runner, 1))  # warm: first-call allocations are not a stage
    unreadable: set[Path] = set()
    for path in itertools.cycle(images):
        if (runs is not None and len(times["total"]) >= runs) or (deadline and time.perf_counter() >= deadline):
            break
        if path in unreadable:
            continue
        t0 = time.perf_counter()
        try:
            image = load_rgb(path)
        except UnreadableImageError:
            unreadable.add(path)  # skipped from now on, counted in the result
            if len(unreadable) == len(images):
                raise BadInputError(f"--end-to-end {source}: no readable image") from None
            continue
        t1 = time.perf_counter()
        tensor = runner.preprocess(image)
        t2 = time.perf_counter()
        logits = runner.infer(tensor)
        t3 = time.perf_counter()
        runner.topk(logits, topk)
        t4 = time.perf_counter()
        for stage, (a, b) in zip(STAGES, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t0, t4))):
            times[stage].append((b - a) * 1000.0)
    stats = {stage: {k: v for k, v in latency_stats(values).items() if k in ("p50_ms", "p90_ms", "p99_ms",
                                                                             "mean_ms")}
             for stage, values in times.items()}
    total = stats["total"]["mean_ms"]
    return {"images": len(images), "unreadable": len(unreadable), "runs": len(times["total"]), "stages": stats,
            "share": {stage: round(stats[stage]["mean_ms"] / total, 4) for stage in STAGES[:-1]},
            "fps": round(1000.0 / total, 2)}
