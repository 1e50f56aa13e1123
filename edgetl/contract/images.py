"""Decoding any photo a user has into an upright 8-bit RGB image, and the image-size limits. No torch.

Training, parity and the device all decode through `load_rgb`, so a photo means the
same pixels everywhere; it sits in the contract beside `preprocess.py`, which turns
the decoded image into network input. It handles what real folders contain:
EXIF-rotated phone pictures, greyscale, 16-bit PNGs (scaled, not clipped), palette
images with transparency, RGBA and LA (composited on white), and CMYK JPEGs. A file
that cannot be fully decoded (a JPEG cut short passes `Image.verify()` but fails a
full `load()`) raises `UnreadableImageError`, and so does a decompression bomb: an
image whose header promises more than `max_pixels()` pixels is refused from its
header, before a byte is decoded (a 175 KB PNG can claim 150 megapixels and take
gigabytes to decode). Folder readers skip such a file with a warning.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from edgetl.errors import BadInputError

# Refuse truncated files instead of padding them with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# The two image-size limits, which mean different things:
# - the classifier's input side in pixels (`--img-size`, a recipe's input_size, a preprocess
#   record's [H, W]): every photo is resized to it, so memory per image grows with its square. The
#   recipes use 224-380; 1024 bounds it, so a typo or a crafted sidecar cannot ask for gigabytes per
#   image. Training asks at least 16, as little is left to classify after a backbone's 32x
#   downsampling; a record read from a file needs only a positive side to be computed;
# - a decoded photo is far larger (it is resized before use) and is bounded by its pixel count only
#   to refuse decompression bombs: 64 Mi pixels lets a 64 MP phone photo (9248 x 6936) pass, which
#   decoded to RGB is already ~260 MB.
MIN_INPUT_SIDE = 16
MAX_INPUT_SIDE = 1024
MAX_PIXELS = 1 << 26
PIXELS_ENV = "EDGETL_MAX_IMAGE_PIXELS"
# PIL warns (DecompressionBombWarning) above its own limit and raises only at twice that; edgetl
# refuses by its own, lower limit, so PIL's warning would only repeat what the skip-and-warn says.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Rows are converted from 16-bit / float in blocks of about this many pixels, so the temporary
# wide-integer or float64 copy is a block, never the whole frame.
_BLOCK_PIXELS = 1 << 18

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class UnreadableImageError(BadInputError):
    """A file that is not a decodable image (corrupt, truncated, empty, other type)."""


def is_image_name(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def max_pixels() -> int:
    """The decompression-bomb limit: MAX_PIXELS, or the positive integer in $EDGETL_MAX_IMAGE_PIXELS."""
    text = os.environ.get(PIXELS_ENV, "").strip()
    if not text:
        return MAX_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise BadInputError(f"{PIXELS_ENV}={text!r} is not a positive number of pixels",
                            f"unset it (default {MAX_PIXELS}) or set e.g. {PIXELS_ENV}=200000000")
    if Image.MAX_IMAGE_PIXELS is not None and value > Image.MAX_IMAGE_PIXELS:
        # PIL raises at twice its own limit inside Image.open; let the user's larger limit decide.
        Image.MAX_IMAGE_PIXELS = value
    return value


def _too_many_pixels(path: Path, pixels: int, limit: int) -> UnreadableImageError:
    return UnreadableImageError(
        f"{path}: {pixels} pixels exceed the limit of {limit} (a possible decompression bomb)",
        f"if the image is genuine, raise the limit with {PIXELS_ENV}={pixels}")


def _to_l_in_blocks(image: Image.Image, convert) -> Image.Image:
    """Map a wide single-channel image to mode L block by block: `convert(block array) -> uint8`."""
    width, height = image.size
    out = Image.new("L", image.size)
    rows = max(1, _BLOCK_PIXELS // max(1, width))
    for top in range(0, height, rows):
        block = np.asarray(image.crop((0, top, width, min(height, top + rows))))
        out.paste(Image.fromarray(convert(block)), (0, top))  # 2-D uint8: mode L
    return out


def _sixteen_bit_to_l(block: np.ndarray, top: int) -> np.ndarray:
    """Integer form of round(v / top * 255), clipped to [0, 255] (exact: no float can tie)."""
    wide = block.astype(np.int32 if block.dtype.kind == "i" else np.uint32)  # 4 bytes a pixel, a block at a time
    np.clip(wide, 0, top, out=wide)
    if top == 65535:  # round(v * 255 / 65535) == round(v / 257) == (v + 128) // 257
        wide += 128
        wide //= 257
    return wide.astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded PIL image of any mode to upright 8-bit RGB."""
    image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit data is scaled (65535 -> 255), not clipped; mode "I" only when it exceeds 255.
        top = 65535 if mode.startswith("I;16") or image.getextrema()[1] > 255 else 255
        return _to_l_in_blocks(image, lambda block: _sixteen_bit_to_l(block, top)).convert("RGB")
    if mode == "F":
        scale = 255.0 if image.getextrema()[1] <= 1.0 else 1.0
        return _to_l_in_blocks(
            image, lambda block: np.clip(block.astype(np.float64) * scale, 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Pasted onto white through its own alpha: the same pixels as alpha_composite onto opaque white,
        # at a third of the peak memory (no RGBA background, no RGBA result to convert).
        rgba = image if mode == "RGBA" else image.convert("RGBA")
        composite = Image.new("RGB", rgba.size, (255, 255, 255))
        composite.paste(rgba, mask=rgba)
        return composite
    if mode != "RGB":
        return image.convert("RGB")
    return image


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open, fully decode and convert one image file; raise UnreadableImageError if it can't be."""
    path = Path(path)
    limit = max_pixels()
    try:
        if path.stat().st_size == 0:
            raise UnreadableImageError(f"{path}: empty file (0 bytes)")
        with Image.open(path) as image:
            # Image.open reads only the header: refuse a bomb before decoding a byte of it.
            if image.width * image.height > limit:
                raise _too_many_pixels(path, image.width * image.height, limit)
            image.load()
            return to_rgb(image)
    except UnreadableImageError:
        raise
    except UnidentifiedImageError as exc:
        raise UnreadableImageError(f"{path}: not an image file PIL can read") from exc
    except Image.DecompressionBombError as exc:  # PIL's own check, at twice its limit, inside Image.open
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_many_pixels(path, int(claimed.group(1)) if claimed else limit + 1, limit) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImageError(f"{path}: cannot be decoded ({exc})") from exc


def from_bgr_array(frame: np.ndarray) -> Image.Image:
    """An OpenCV frame (H, W, 3 BGR uint8, or greyscale) as an RGB PIL image."""
    if frame.ndim == 2:
        return Image.fromarray(frame, "L").convert("RGB")
    # PIL's raw decoder swaps the channels while it copies: one pass, ~7x faster than
    # reversing the array in numpy first.
    frame = np.ascontiguousarray(frame)
    return Image.frombuffer("RGB", (frame.shape[1], frame.shape[0]), frame, "raw", "BGR", 0, 1)


def shrink(image: Image.Image, short_side: int) -> Image.Image:
    """The image with its short side cut to `short_side` (bilinear, which PIL antialiases on
    downscale); unchanged when it is already that small. Used for the training cache, golden
    and held-out samples: one definition, so they shrink alike."""
    scale = short_side / min(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)
