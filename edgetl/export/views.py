"""Shifted views of the validation images: more evidence for the gate's agreement bound.

Agreement with the float model needs no labels, so the gate can judge it on
more inputs than the validation split has images. On a split of 160 images one
flipped image is 0.6 pp and the 98.5% bound is decided by 2 versus 3 flips: a
coin toss between an int8 that agrees on 98% and one that agrees on 99%. Each
image is also seen shifted by a few percent of its side in four directions (the
framing jitter a fixed camera sees anyway; labels still hold, so the views need
no mirror or colour change that a dataset might not allow), until the gate has
`MIN_VIEWS` inputs. An image near the float model's decision boundary then
counts by how many of its views flip instead of by one yes/no.
`scripts/gate_reliability.py` measures how often the decision on a small split
matches the decision on a large one, with and without views.

The accuracy drop stays measured on the original images alone (what parity
reports); only the agreement bound reads the views.
"""

from __future__ import annotations

import math

import numpy as np

MIN_VIEWS = 800  # the gate judges agreement on at least this many inputs (when the split allows)
MAX_VIEWS_PER_IMAGE = 5  # the image itself and four shifts
SHIFT_FRACTION = 0.04  # of the image's side


def views_per_image(images: int, minimum: int = MIN_VIEWS) -> int:
    """How many views of each image reach `minimum` inputs (1: the split is large enough alone)."""
    if images <= 0:
        return 1
    return max(1, min(MAX_VIEWS_PER_IMAGE, math.ceil(minimum / images)))


def _shifted(pixels: np.ndarray, dy: int, dx: int, pad: int) -> np.ndarray:
    padded = np.pad(pixels, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    height, width = pixels.shape[1:3]
    return padded[:, pad + dy:pad + dy + height, pad + dx:pad + dx + width]


def shifted_views(pixels: np.ndarray, count: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N * count, H, W, 3): the images first, then each shift of all of them
    (right, left, down, up by SHIFT_FRACTION of the side, edges replicated)."""
    if count <= 1 or len(pixels) == 0:
        return pixels
    shift = max(1, round(SHIFT_FRACTION * min(pixels.shape[1:3])))
    moves = [(0, shift), (0, -shift), (shift, 0), (-shift, 0)][:count - 1]
    return np.concatenate([pixels] + [_shifted(pixels, dy, dx, shift) for dy, dx in moves])


def view_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Top-1 agreement over every view."""
    return float(np.mean(reference.argmax(1) == candidate.argmax(1))) if len(reference) else 1.0
