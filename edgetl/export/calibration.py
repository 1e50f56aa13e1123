"""Calibration data: one source of images, adapted to each quantizer by a transform.

Like NNCF's `Dataset(source, transform_fn)`: the source is a class-balanced draw
of images from the run's *train* split (never val or test, which judge the
result), cut with the exact evaluation geometry; each backend asks for the
layout it needs (NCHW float for onnxruntime and OpenVINO, NHWC for TFLite).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from edgetl.console import progress_bar
from edgetl.contract.images import UnreadableImageError, load_rgb
from edgetl.contract.preprocess import Preprocess
from edgetl.data.folder import Sample
from edgetl.errors import BadInputError

MIN_IMAGES = 8


def normalized_batches(pixels: np.ndarray, preprocess: Preprocess, layout: str, limit: int | None = None,
                       batch_size: int = 1) -> Iterator[np.ndarray]:
    """Evaluation-cut uint8 pixels -> normalised float32 model inputs in `layout`, a batch at a time."""
    pre = replace(preprocess, layout=layout, input_dtype="float32", input_scale=None, input_zero_point=None)
    count = len(pixels) if limit is None else min(limit, len(pixels))
    for start in range(0, count, batch_size):
        yield pre.normalize(pixels[start:min(count, start + batch_size)])


@dataclass
class CalibrationSet:
    pixels: np.ndarray  # (N, H, W, 3) uint8, evaluation geometry applied
    preprocess: Preprocess
    source: str  # where the images came from, for the sidecar
    class_counts: dict[str, int]

    def __len__(self) -> int:
        return len(self.pixels)

    def batches(self, layout: str = "NCHW", limit: int | None = None, batch_size: int = 1) -> Iterator[np.ndarray]:
        return normalized_batches(self.pixels, self.preprocess, layout, limit, batch_size)


@dataclass
class LabelledImages:
    """Evaluation-cut pixels with their class indices (a split used to judge a quantization)."""

    pixels: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int
    paths: list[str]
    preprocess: Preprocess

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, layout: str = "NCHW", batch_size: int = 1) -> Iterator[np.ndarray]:
        return normalized_batches(self.pixels, self.preprocess, layout, None, batch_size)


def balanced_draw(samples: list[Sample], count: int, seed: int = 0) -> list[Sample]:
    """Round-robin over classes (shuffled within each), so every class is represented equally."""
    rng = random.Random(seed)
    by_class: dict[str, list[Sample]] = {}
    for sample in samples:
        by_class.setdefault(sample.label, []).append(sample)
    for members in by_class.values():
        rng.shuffle(members)
    chosen, index = [], 0
    while len(chosen) < count and any(index < len(m) for m in by_class.values()):
        for label in sorted(by_class):
            if index < len(by_class[label]) and len(chosen) < count:
                chosen.append(by_class[label][index])
        index += 1
    return chosen


def load_calibration(root: Path, samples: list[Sample], preprocess: Preprocess, count: int,
                     source: str, minimum: int = MIN_IMAGES) -> CalibrationSet:
    if count < 1:
        raise BadInputError(f"--calib-size {count} is invalid", "use at least a few hundred images")
    from edgetl.console import warn

    chosen = balanced_draw(samples, count)
    pixels, counts, unreadable = [], {}, []
    with progress_bar("calibration images", len(chosen)) as advance:
        for sample in chosen:
            try:
                pixels.append(preprocess.resize_crop(load_rgb(root / sample.path)))
                counts[sample.label] = counts.get(sample.label, 0) + 1
            except (UnreadableImageError, FileNotFoundError):
                unreadable.append(sample.path)
            advance()
    if unreadable:
        warn(f"calibration skipped {len(unreadable)} unreadable or missing image(s) of {source}, "
             f"e.g. {unreadable[0]}")
    if len(pixels) < minimum:
        raise BadInputError(
            f"only {len(pixels)} readable calibration images in {source} (at least {minimum} needed for int8)",
            "point --calib-data at a folder of training images, or export fp32 only (--precision fp32)",
        )
    return CalibrationSet(np.stack(pixels), preprocess, source, counts)


def calibration_for_run(reference, calib_size: int, wanted: int, calib_data: str | None) -> CalibrationSet:
    """`wanted` class-balanced images from the run's train split (or `calib_data`), never val or test."""
    from edgetl.console import warn
    from edgetl.data.folder import list_images
    from edgetl.data.splits import load_split

    if calib_data:
        samples, root, source = list_images(calib_data), Path(calib_data), f"folder {calib_data}"
    else:
        root = reference.run.existing_data_root("calibration (the run's train split)",
                                                ", or point --calib-data at a folder of training images")
        samples, source = load_split(reference.run.path, "train"), "train split"
    calibration = load_calibration(root, samples, reference.preprocess, wanted, source)
    if len(calibration) < calib_size:
        warn(f"calibrating on {len(calibration)} images ({source} has no more); --calib-size asked {calib_size}")
    return calibration
