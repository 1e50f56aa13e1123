"""From a data folder to train/val/test datasets: scan, split, validate, cache, report.

The returned `PreparedData` carries the splits as they will be saved in the run
(unreadable files already removed), and a report of class counts and imbalance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from edgetl.console import info, warn
from edgetl.contract.images import shrink
from edgetl.contract.preprocess import Preprocess
from edgetl.data.dataset import AUTO_CACHE_BYTES, EvalImages, TrainImages
from edgetl.data.folder import SPLIT_NAMES, Sample, class_counts, imbalance_ratio, scan_image_folder
from edgetl.data.splits import stratified_split
from edgetl.data.transforms import train_transform
from edgetl.data.validate import check_images
from edgetl.errors import DatasetError

IMBALANCE_WARNING = 3.0


@dataclass
class PreparedData:
    root: Path
    classes: list[str]
    layout: str
    splits: dict[str, list[Sample]]
    train: TrainImages
    val: EvalImages
    test: EvalImages | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    report: dict = field(default_factory=dict)


def _initial_splits(cfg, folder) -> dict[str, list[Sample]]:
    if folder.layout == "flat":
        return stratified_split(folder.samples, folder.classes, cfg.val_split, cfg.test_split, cfg.seed)
    splits = {name: list(folder.presplit.get(name, [])) for name in SPLIT_NAMES}
    if not splits["val"]:
        # train/ + test/ only: carve validation images out of train, stratified.
        carved = stratified_split(splits["train"], folder.classes, cfg.val_split, 0.0, cfg.seed)
        splits["train"], splits["val"] = carved["train"], carved["val"]
    return splits


@dataclass
class _Decoded:
    """What one pass over every split's files keeps: readable samples and the pixels they cache."""

    kept: dict[str, list[Sample]]
    skipped: list[tuple[str, str]]
    train_pixels: list[np.ndarray] | None  # shrunk training photos, or None when the cache is off
    eval_pixels: dict[str, list[np.ndarray]]  # val/test, already through the evaluation geometry


def _train_cache(cfg, preprocess: Preprocess, train_count: int) -> int | None:
    """The short side training photos are cached at in RAM, or None when the cache is off."""
    cache_side = int(round(max(preprocess.size) * 1.5))
    estimate = train_count * cache_side * cache_side * 4  # ~4:3 photos, 3 bytes a pixel
    return cache_side if cfg.cache == "ram" or (cfg.cache == "auto" and estimate <= AUTO_CACHE_BYTES) else None


def _decode_splits(cfg, root: Path, splits: dict[str, list[Sample]], preprocess: Preprocess,
                   cache_side: int | None) -> _Decoded:
    """Decode every file once: drop the unreadable, cache training photos and the evaluation pixels."""
    decoded = _Decoded({}, [], [] if cache_side else None, {"val": [], "test": []})
    for name in SPLIT_NAMES:
        if not splits[name]:
            decoded.kept[name] = []
            continue
        if name == "train":
            def callback(_i, _s, image: Image.Image) -> None:
                if cache_side:
                    decoded.train_pixels.append(np.asarray(shrink(image, cache_side), dtype=np.uint8))
        else:
            def callback(_i, _s, image, bucket=decoded.eval_pixels[name]):
                bucket.append(preprocess.resize_crop(image))
        result = check_images(root, splits[name], strict=cfg.strict, on_image=callback)
        decoded.kept[name] = result.kept
        decoded.skipped.extend(result.skipped)
    return decoded


def _check_counts(counts: dict[str, dict[str, int]], kept: dict[str, list[Sample]]) -> float:
    """Refuse a class left without training images or a split without validation; warn on imbalance.
    Returns the training imbalance ratio."""
    empty = [c for c, n in counts["train"].items() if n == 0]
    if empty:
        raise DatasetError(
            f"after skipping unreadable files, class(es) {', '.join(empty)} have no training image",
            "add readable images for them",
        )
    if not kept["val"]:
        raise DatasetError("no readable validation image", "add images or raise --val-split")
    ratio = imbalance_ratio(counts["train"])
    if ratio >= IMBALANCE_WARNING:
        small = min(counts["train"], key=counts["train"].get)
        large = max(counts["train"], key=counts["train"].get)
        warn(f"classes are imbalanced {ratio:.1f}:1 in train ({large}: {counts['train'][large]}, "
             f"{small}: {counts['train'][small]}); per-class accuracy in the report shows who suffers")
    return ratio


def prepare_data(cfg, preprocess: Preprocess, colour_in_workers: bool = True) -> PreparedData:
    folder = scan_image_folder(cfg.data)
    if folder.ignored_files:
        warn(f"ignored {len(folder.ignored_files)} file(s) that are not images by name, "
             f"e.g. {folder.ignored_files[0]}")
    splits = _initial_splits(cfg, folder)
    cache_side = _train_cache(cfg, preprocess, len(splits["train"]))
    decoded = _decode_splits(cfg, folder.root, splits, preprocess, cache_side)
    kept, cache_train = decoded.kept, cache_side is not None
    counts = {name: class_counts(kept[name], folder.classes) for name in SPLIT_NAMES}
    ratio = _check_counts(counts, kept)
    info(
        f"data: {len(folder.classes)} classes, train {len(kept['train'])}, val {len(kept['val'])}, "
        f"test {len(kept['test'])} images ({folder.layout} layout, train cache {'RAM' if cache_train else 'off'})"
    )
    class_index = {c: i for i, c in enumerate(folder.classes)}

    def evaluation(name: str) -> EvalImages:
        height, width = preprocess.size
        pixels = decoded.eval_pixels[name]
        stacked = np.stack(pixels) if pixels else np.zeros((0, height, width, 3), np.uint8)
        return EvalImages(stacked, [class_index[s.label] for s in kept[name]])

    train = TrainImages(
        folder.root, [s.path for s in kept["train"]], [class_index[s.label] for s in kept["train"]],
        train_transform(cfg.augment, preprocess, colour=colour_in_workers), decoded.train_pixels,
    )
    report = {
        "layout": folder.layout,
        "classes": folder.classes,
        "counts": counts,
        "train_imbalance_ratio": round(ratio, 3),
        "skipped": [{"path": p, "reason": r} for p, r in decoded.skipped],
        "ignored_files": folder.ignored_files,
        "train_cache": "ram" if cache_train else "none",
    }
    return PreparedData(
        root=folder.root, classes=folder.classes, layout=folder.layout, splits=kept, train=train,
        val=evaluation("val"), test=evaluation("test") if kept["test"] else None,
        skipped=decoded.skipped, report=report,
    )
