"""From a data folder to train/val/test datasets: scan, split, validate, cache, report.

The returned `PreparedData` carries the splits as they will be saved in the run
(unreadable files already removed), and a report of class counts and imbalance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from rich.markup import escape

from edgetl.console import info, warn
from edgetl.contract.preprocess import Preprocess
from edgetl.data.dataset import AUTO_CACHE_BYTES, EvalImages, TrainImages
from edgetl.data.folder import SPLIT_NAMES, Sample, class_counts, imbalance_ratio, scan_image_folder
from edgetl.data.splits import stratified_split
from edgetl.data.transforms import train_transform
from edgetl.data.validate import check_images
from edgetl.errors import DatasetError
from edgetl.runtime.images import shrink

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


def prepare_data(cfg, preprocess: Preprocess, colour_in_workers: bool = True) -> PreparedData:
    folder = scan_image_folder(cfg.data)
    if folder.ignored_files:
        warn(f"ignored {len(folder.ignored_files)} file(s) that are not images by name, "
             f"e.g. {escape(folder.ignored_files[0])}")
    splits = _initial_splits(cfg, folder)
    class_index = {c: i for i, c in enumerate(folder.classes)}
    cache_side = int(round(max(preprocess.size) * 1.5))
    estimate = len(splits["train"]) * cache_side * cache_side * 4  # ~4:3 photos, 3 bytes a pixel
    cache_train = cfg.cache == "ram" or (cfg.cache == "auto" and estimate <= AUTO_CACHE_BYTES)

    train_pixels: list[np.ndarray] = []
    eval_pixels: dict[str, list[np.ndarray]] = {"val": [], "test": []}

    def keep_train(_i: int, _s: Sample, image: Image.Image) -> None:
        if cache_train:
            train_pixels.append(np.asarray(shrink(image, cache_side), dtype=np.uint8))

    skipped: list[tuple[str, str]] = []
    kept: dict[str, list[Sample]] = {}
    for name in SPLIT_NAMES:
        if not splits[name]:
            kept[name] = []
            continue
        if name == "train":
            callback = keep_train
        else:
            def callback(_i, _s, image, bucket=eval_pixels[name]):
                bucket.append(preprocess.resize_crop(image))
        result = check_images(folder.root, splits[name], strict=cfg.strict, on_image=callback)
        kept[name] = result.kept
        skipped.extend(result.skipped)

    counts = {name: class_counts(kept[name], folder.classes) for name in SPLIT_NAMES}
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
        warn(escape(f"classes are imbalanced {ratio:.1f}:1 in train ({large}: {counts['train'][large]}, "
                    f"{small}: {counts['train'][small]}); per-class accuracy in the report shows who suffers"))
    info(
        f"data: {len(folder.classes)} classes, train {len(kept['train'])}, val {len(kept['val'])}, "
        f"test {len(kept['test'])} images ({folder.layout} layout, train cache {'RAM' if cache_train else 'off'})"
    )

    def labels(name: str) -> list[int]:
        return [class_index[s.label] for s in kept[name]]

    def stack(name: str) -> np.ndarray:
        height, width = preprocess.size
        return np.stack(eval_pixels[name]) if eval_pixels[name] else np.zeros((0, height, width, 3), np.uint8)

    train = TrainImages(
        folder.root, [s.path for s in kept["train"]], labels("train"),
        train_transform(cfg.augment, preprocess, colour=colour_in_workers), train_pixels if cache_train else None,
    )
    report = {
        "layout": folder.layout,
        "classes": folder.classes,
        "counts": counts,
        "train_imbalance_ratio": round(ratio, 3),
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
        "ignored_files": folder.ignored_files,
        "train_cache": "ram" if cache_train else "none",
    }
    return PreparedData(
        root=folder.root, classes=folder.classes, layout=folder.layout, splits=kept, train=train,
        val=EvalImages(stack("val"), labels("val")),
        test=EvalImages(stack("test"), labels("test")) if kept["test"] else None,
        skipped=skipped, report=report,
    )
