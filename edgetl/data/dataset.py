"""Torch datasets over validated images, with an in-memory cache of decoded pixels.

Decoding JPEGs is what starves a fast GPU (a 16-core host decodes a few thousand
per second; an H100 trains MobileNetV3 at ~8,000 img/s). Images are decoded once
during validation and kept as uint8: training images shrunk so their short side
is `cache_side` (random crops still have detail), evaluation images already cut
to the exact evaluation geometry. With the cache off, files are decoded per item
in the DataLoader workers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from edgetl.contract.images import load_rgb
from edgetl.data.transforms import PixelTransform

# Rough per-process budget for the RAM cache before `cache=auto` falls back to disk.
AUTO_CACHE_BYTES = 6 * 1024**3


class TrainImages:
    """Items are (uint8 CHW tensor, label) after a random augmentation."""

    def __init__(self, root: Path, paths: list[str], labels: list[int], transform: PixelTransform,
                 cached: list[np.ndarray] | None = None):
        self.root, self.paths, self.labels = root, paths, labels
        self.transform = transform
        self.cached = cached

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        import torch

        if self.cached is not None:
            image = Image.fromarray(self.cached[index])
        else:
            image = load_rgb(self.root / self.paths[index])
        pixels = self.transform(image)
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))), self.labels[index]


class EvalImages:
    """Pre-cut evaluation pixels (N, H, W, 3) uint8 -> (uint8 CHW tensor, label)."""

    def __init__(self, pixels: np.ndarray, labels: list[int]):
        self.pixels, self.labels = pixels, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.pixels[index].transpose(2, 0, 1))), self.labels[index]
