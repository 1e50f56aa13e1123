"""Decoding any photo a user has into an upright 8-bit RGB image. No torch.

Training, parity and the device all decode through `load_rgb`, so a photo means
the same pixels everywhere. It handles what real folders contain: EXIF-rotated
phone pictures, greyscale, 16-bit PNGs (scaled, not clipped), palette images
with transparency, RGBA and LA (composited on white), and CMYK JPEGs. A file that
cannot be fully decoded (a JPEG cut short passes `Image.verify()` but fails a
full `load()`) raises `UnreadableImageError`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from edgetl.errors import BadInputError

# Refuse truncated files instead of padding them with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class UnreadableImageError(BadInputError):
    """A file that is not a decodable image (corrupt, truncated, empty, other type)."""


def is_image_name(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded PIL image of any mode to upright 8-bit RGB."""
    image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, "L").convert("RGB")
    if mode == "F":
        array = np.asarray(image, dtype=np.float64)
        scale = 255.0 if array.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return image.convert("RGB")
    return image


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open, fully decode and convert one image file; raise UnreadableImageError if it can't be."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise UnreadableImageError(f"{path}: empty file (0 bytes)")
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except UnreadableImageError:
        raise
    except UnidentifiedImageError as exc:
        raise UnreadableImageError(f"{path}: not an image file PIL can read") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImageError(f"{path}: cannot be decoded ({exc})") from exc


def from_bgr_array(frame: np.ndarray) -> Image.Image:
    """An OpenCV frame (H, W, 3 BGR uint8, or greyscale) as an RGB PIL image."""
    if frame.ndim == 2:
        return Image.fromarray(frame, "L").convert("RGB")
    # PIL's raw decoder swaps the channels while it copies: one pass, ~7x faster than
    # reversing the array in numpy first.
    frame = np.ascontiguousarray(frame)
    return Image.frombuffer("RGB", (frame.shape[1], frame.shape[0]), frame, "raw", "BGR", 0, 1)
