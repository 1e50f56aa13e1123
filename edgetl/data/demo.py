"""`edgetl demo-data`: a small, real image-folder dataset from data that ships in a package.

scikit-learn ships 1,797 real handwritten digits (8x8, 16 grey levels, from the
UCI collection). They are upscaled to photos of `size` pixels and written as
`OUT/<digit name>/<n>.png`, the layout users bring, so every command has an
embedded default that needs no download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from edgetl import atomic
from edgetl.errors import require

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_demo_data(out: str | Path, per_class: int = 100, size: int = 64, seed: int = 0) -> dict:
    """Write the digits as an image folder; returns {"path", "classes", "images"}."""
    datasets = require("sklearn.datasets", "dev", "the demo dataset (scikit-learn's digits)")
    digits = datasets.load_digits()
    rng = np.random.default_rng(seed)
    out = Path(out)
    written = 0
    with atomic.atomic_dir(out, kind="demo data") as tmp:
        for label, name in enumerate(DIGIT_NAMES):
            indices = np.flatnonzero(digits.target == label)
            chosen = np.sort(rng.permutation(indices)[:per_class])
            (tmp / name).mkdir()
            for index in chosen:
                pixels = (digits.images[index] / 16.0 * 255.0).astype(np.uint8)
                image = Image.fromarray(pixels, "L").resize((size, size), Image.Resampling.BICUBIC)
                image.save(tmp / name / f"{index:04d}.png")
                written += 1
    return {"path": str(out), "classes": list(DIGIT_NAMES), "images": written}
