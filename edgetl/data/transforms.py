"""Training augmentation presets; evaluation reuses the contract's `Preprocess` (contract/preprocess.py).

Every transform maps an RGB PIL image to an H x W x 3 uint8 array. Normalisation
(mean/std) is deliberately not here: batches travel as uint8 (4x less to copy to
a GPU) and are normalised on the device with the same formula as
`Preprocess.normalize`, so training-time evaluation equals what the device runs.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image

from edgetl.contract.preprocess import Preprocess

PixelTransform = Callable[[Image.Image], np.ndarray]


def train_transform(preset: str, preprocess: Preprocess, colour: bool = True) -> PixelTransform:
    """none: the evaluation geometry; light: crops, flips, mild colour; strong: + TrivialAugment, erasing.

    `colour=False` leaves the light preset's colour jitter out: on a GPU the trainer applies it to
    the whole batch on the device (`edgetl.train.device_augment`), so the workers only cut crops.
    """
    if preset == "none":
        return preprocess.resize_crop
    import torchvision.transforms as T

    height, width = preprocess.size
    if preset == "light":
        steps = [
            T.RandomResizedCrop((height, width), scale=(0.5, 1.0)),
            T.RandomHorizontalFlip(),
        ] + ([T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)] if colour else [])
    else:
        steps = [
            T.RandomResizedCrop((height, width), scale=(0.25, 1.0)),
            T.RandomHorizontalFlip(),
            T.TrivialAugmentWide(),
            T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05),
        ]
    pipeline = T.Compose(steps)
    erase = preset == "strong"

    def apply(image: Image.Image) -> np.ndarray:
        pixels = np.array(pipeline(image), dtype=np.uint8)
        if erase:
            pixels = _random_erase(pixels)
        return pixels

    return apply


def _random_erase(pixels: np.ndarray, probability: float = 0.25) -> np.ndarray:
    """Cutout with random grey noise (uses torch's RNG so resumed runs replay it)."""
    import torch

    if float(torch.rand(())) >= probability:
        return pixels
    h, w = pixels.shape[:2]
    area = float(torch.empty(()).uniform_(0.02, 0.25)) * h * w
    aspect = float(torch.empty(()).uniform_(0.3, 3.3))
    eh, ew = min(h, int(round((area * aspect) ** 0.5))), min(w, int(round((area / aspect) ** 0.5)))
    top = int(torch.randint(0, h - eh + 1, ()))
    left = int(torch.randint(0, w - ew + 1, ()))
    pixels[top:top + eh, left:left + ew] = torch.randint(0, 256, (eh, ew, 3), dtype=torch.uint8).numpy()
    return pixels
