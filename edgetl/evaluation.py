"""Comparing a model's outputs with the float model's on the same labelled images. No torch.

Used by the export gate (on the validation split) and by parity (on the test
split): accuracy, top-5, the drop in percentage points, top-1 agreement, mean
KL divergence and cosine similarity of the output distributions, per-class
accuracy changes, and which images changed their prediction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from edgetl.contract.images import UnreadableImageError, load_rgb
from edgetl.contract.preprocess import Preprocess
from edgetl.runtime.base import Runner, softmax


class ImageCache:
    """Decode held-out images once; cut them once per distinct geometry.

    Artifacts normally share one geometry, but a sidecar with a different resize or
    size must get exactly what it asks for (that is how a mismatch is caught).
    """

    def __init__(self, root: Path, paths: list[str]):
        self.root, self.paths = Path(root), paths
        self._images: list[Image.Image] | None = None
        self._cuts: dict[tuple, np.ndarray] = {}
        self.unreadable: list[str] = []

    def images(self) -> list[Image.Image]:
        if self._images is None:
            decoded = []
            for rel in self.paths:
                try:
                    decoded.append(load_rgb(self.root / rel))
                except (UnreadableImageError, FileNotFoundError):
                    self.unreadable.append(rel)
                    decoded.append(Image.new("RGB", (8, 8)))
            self._images = decoded
        return self._images

    def pixels(self, preprocess: Preprocess) -> np.ndarray:
        key = (preprocess.size, preprocess.resize, preprocess.crop_ratio, preprocess.interpolation)
        if key not in self._cuts:
            self._cuts[key] = np.stack([preprocess.resize_crop(image) for image in self.images()])
        return self._cuts[key]


def runner_logits(runner: Runner, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Logits of an artifact for pre-cut pixels, normalised by the artifact's own sidecar."""
    parts = [runner.infer(runner.sidecar.preprocess.normalize(pixels[i:i + batch_size]))
             for i in range(0, len(pixels), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, len(runner.labels)), np.float32)


def _topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = np.argsort(-logits, axis=1)[:, :k]
    return float(np.mean([label in row for row, label in zip(top, labels)]))


def compare(reference: np.ndarray, candidate: np.ndarray, labels: Iterable[int], classes: list[str]) -> dict:
    """Metrics of `candidate` logits against the float `reference` on the same images."""
    labels = np.asarray(list(labels))
    ref_pred, cand_pred = reference.argmax(1), candidate.argmax(1)
    ref_acc = float(np.mean(ref_pred == labels))
    cand_acc = float(np.mean(cand_pred == labels))
    p, q = softmax(reference.astype(np.float64)), softmax(candidate.astype(np.float64))
    kl = float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)))
    cosine = float(np.mean(np.sum(p * q, axis=1) / (np.linalg.norm(p, axis=1) * np.linalg.norm(q, axis=1) + 1e-12)))
    per_class = {}
    for index, name in enumerate(classes):
        mask = labels == index
        if mask.any():
            before = float(np.mean(ref_pred[mask] == index))
            after = float(np.mean(cand_pred[mask] == index))
            per_class[name] = {"float": round(before, 4), "artifact": round(after, 4),
                               "drop_pp": round(100 * (before - after), 2), "images": int(mask.sum())}
    worst = max(per_class, key=lambda c: per_class[c]["drop_pp"]) if per_class else None
    result = {
        "images": int(len(labels)),
        "accuracy": round(cand_acc, 6),
        "float_accuracy": round(ref_acc, 6),
        "drop_pp": round(100 * (ref_acc - cand_acc), 3),
        "agreement": round(float(np.mean(ref_pred == cand_pred)), 6),
        "kl": round(kl, 6),
        "cosine": round(cosine, 6),
        "worst_class": worst,
        "worst_class_drop_pp": per_class[worst]["drop_pp"] if worst else None,
        "per_class": per_class,
        "changed": [int(i) for i in np.flatnonzero(ref_pred != cand_pred)],
    }
    if len(classes) >= 5:
        result["top5"] = round(_topk_accuracy(candidate, labels, 5), 6)
        result["float_top5"] = round(_topk_accuracy(reference, labels, 5), 6)
    return result


def fp32_ratios(rows: list[dict], precision_key: str, latency_key: str,
                same: tuple[str, ...] = ()) -> list[float | None]:
    """Each row's latency over that of the first fp32 row of its format (and of the same `same` settings,
    e.g. threads and batch in a sweep; None without one): the int8/fp32 speed-up that export's table and
    `edgetl bench` both show."""
    def key(row: dict) -> tuple:
        return (row["format"], *(row.get(k) for k in same))

    fp32: dict[tuple, float] = {}
    for row in rows:
        if row.get(precision_key) == "fp32" and row.get(latency_key):
            fp32.setdefault(key(row), row[latency_key])
    return [round(row[latency_key] / fp32[key(row)], 3) if row.get(latency_key) and key(row) in fp32
            else None for row in rows]


CONFIDENCE_THRESHOLDS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)


def confidence_tradeoff(logits: np.ndarray, labels: np.ndarray,
                        thresholds: Sequence[float] = CONFIDENCE_THRESHOLDS) -> list[dict]:
    """What `edgetl run --min-confidence P` would do on these images, for a few P: the share of images it
    still names a class for (coverage), and how often that class is right (accuracy on the covered ones).
    The rest it reports unknown. Choose P on the validation split; quote the test split."""
    probs = softmax(np.asarray(logits, dtype=np.float64))
    top, correct = probs.max(axis=1), probs.argmax(axis=1) == np.asarray(labels)
    rows = []
    for threshold in thresholds:
        covered = top >= threshold
        count = int(covered.sum())
        rows.append({"min_confidence": threshold, "covered": count, "images": int(len(top)),
                     "coverage": round(count / len(top), 6) if len(top) else None,
                     "accuracy": round(float(correct[covered].mean()), 6) if count else None})
    return rows
