"""A held-out photo set from real photographs that ship in packages: textures cut from photos.

Quantization recipes cannot be told apart on the digits demo (every recipe
keeps ~99%), and choosing a recipe on the images that then report it is
tuning to the test. This set is built so neither happens:

- each class is one real photograph (scikit-image ships them; scikit-learn
  ships two more), and its area is cut into three disjoint strips along the
  longer side: train (the first 60%), val (the next 20%), test (the last 20%);
- every image is a random square crop lying wholly inside its split's strip,
  so a test image shares no pixel with any training or validation image;
- crops are resized to `size` px and lightly jittered (flip, brightness,
  sensor-like noise) and saved as JPEG, like a camera would deliver them.

Written as `OUT/{train,val,test}/<class>/<n>.jpg`, the pre-split layout
`edgetl finetune` keeps as it is. Choose recipes and thresholds on `val`; quote
`test` only as the final figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from edgetl import atomic
from edgetl.errors import require

# (class name, loader): greyscale textures, colour micrographs and two scenes, all real photographs.
PHOTOS = ("brick", "grass", "gravel", "moon", "cell", "hubble_deep_field", "immunohistochemistry", "retina",
          "china", "flower")
SPLITS = (("train", 0.0, 0.6), ("val", 0.6, 0.8), ("test", 0.8, 1.0))
DEFAULT_COUNTS = {"train": 200, "val": 80, "test": 80}


def load_photo(name: str) -> np.ndarray:
    """One photograph as (H, W, 3) uint8."""
    if name in ("china", "flower"):
        datasets = require("sklearn.datasets", "dev", "the photo set (scikit-learn's sample images)")
        images = datasets.load_sample_images()
        pixels = images.images[[Path(f).stem for f in images.filenames].index(name)]
    else:
        data = require("skimage.data", "dev", "the photo set (scikit-image's photographs)")
        pixels = getattr(data, name)()
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return np.ascontiguousarray(pixels[..., :3].astype(np.uint8))


def _crop(photo: np.ndarray, start: float, stop: float, rng: np.random.Generator) -> np.ndarray:
    """A random square crop lying wholly inside the [start, stop) strip of the photo's longer side."""
    height, width = photo.shape[:2]
    along_width = width >= height
    length, across = (width, height) if along_width else (height, width)
    low, high = int(round(start * length)), int(round(stop * length))
    largest = min(high - low, across)
    for _ in range(20):  # skip featureless crops (black borders), which no class owns
        side = int(rng.integers(max(32, largest // 2), largest + 1))
        offset = int(rng.integers(low, high - side + 1))
        other = int(rng.integers(0, across - side + 1))
        y, x = (other, offset) if along_width else (offset, other)
        crop = photo[y:y + side, x:x + side]
        if crop.std() > 6:
            return crop
    return crop


def write_photo_set(out: str | Path, counts: dict[str, int] | None = None, size: int = 160, seed: int = 0,
                    classes: tuple[str, ...] = PHOTOS) -> dict:
    """Write the photo set; returns {"path", "classes", "images": {split: count}}."""
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    rng = np.random.default_rng(seed)
    out = Path(out)
    written = {split: 0 for split, _, _ in SPLITS}
    with atomic.atomic_dir(out, kind="photo set") as tmp:
        for name in classes:
            photo = load_photo(name)
            for split, start, stop in SPLITS:
                folder = tmp / split / name
                folder.mkdir(parents=True)
                for index in range(counts[split]):
                    crop = Image.fromarray(_crop(photo, start, stop, rng)).resize((size, size), Image.Resampling.BILINEAR)
                    if rng.random() < 0.5:
                        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                    pixels = np.asarray(crop, np.float32) * rng.uniform(0.8, 1.2) + rng.normal(0, 4, (size, size, 3))
                    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                        folder / f"{index:04d}.jpg", quality=90)
                    written[split] += 1
    return {"path": str(out), "classes": list(classes), "images": written}
