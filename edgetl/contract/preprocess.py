"""Evaluation preprocessing, defined once. No torch.

The same code turns a photo into network input during training-time evaluation,
calibration, parity and on the device, driven by one `Preprocess` record that
travels in the run directory (`preprocess.json`) and in every artifact's sidecar.
A C/C++ user reproduces it from the README description:

1. decode to upright 8-bit RGB (`images.load_rgb`);
2. resize: "stretch" resizes to exactly size [H, W]; "center-crop" scales the
   image (aspect kept) until it covers [H / crop_ratio, W / crop_ratio], rounding
   each side to the nearest pixel, then cuts the centred H x W window
   (offsets floor((new - target) / 2)); PIL bilinear (antialiased) or bicubic,
   resampling only the source box that the crop keeps (same filter, half the work);
3. x = (pixel / 255 - mean) / std per channel in `color_order`;
4. lay out as NCHW or NHWC; for an int8/uint8 input tensor, q = round(x / scale) + zero_point, clipped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8}
# Bounds for a record read from a file: a network input side beyond 4096 px is a typo or a
# crafted sidecar (a 1e9 x 1e9 input would be allocated per image), and a crop ratio near 0
# overflows the cover-size arithmetic; real backbones use 0.3..1.
MAX_SIDE = 4096
MIN_CROP_RATIO = 0.05


def _whole(value) -> bool:
    """A pixel count from JSON: an integer, a float with no fraction or a string of digits (never a bool).

    int() alone would silently truncate 224.7 and accept True as 1.
    """
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, str):
        return value.strip().isdigit()
    return isinstance(value, float) and value.is_integer()


@dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int] = (224, 224)  # [H, W]
    resize: str = "center-crop"
    crop_ratio: float = 0.875
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    layout: str = "NCHW"
    color_order: str = "RGB"
    # Quantized input tensors (int8/uint8) take q = round(x / scale) + zero_point.
    input_dtype: str = "float32"
    input_scale: float | None = None
    input_zero_point: int | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["size"] = list(self.size)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        data.pop("extra")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocess":
        from edgetl.errors import BadInputError

        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "extra"}
        try:
            size = known.get("size", (224, 224))
            sides = list(size) if isinstance(size, (list, tuple)) else [size, size]
            if len(sides) != 2 or not all(_whole(side) for side in sides):
                raise ValueError(f"size {size!r} is not [H, W] in whole pixels")
            known["size"] = (int(sides[0]), int(sides[1]))
            for key in ("mean", "std"):
                if key in known:
                    known[key] = tuple(float(v) for v in known[key])
                    if len(known[key]) != 3:
                        raise ValueError(f"{key} needs three values")
            # Numbers from a hand-edited JSON file may arrive as strings: convert, naming the field.
            for key in ("crop_ratio", "input_scale", "input_zero_point"):
                if known.get(key) is not None:
                    try:
                        number = float(known[key])
                    except (TypeError, ValueError, OverflowError):
                        raise ValueError(f"{key} {known[key]!r} is not a number") from None
                    if key == "input_zero_point":
                        if not number.is_integer():
                            raise ValueError(f"{key} {known[key]!r} is not an integer")
                        number = int(number)
                    known[key] = number
            pre = cls(**known)
        except (TypeError, ValueError, IndexError, OverflowError) as exc:
            raise BadInputError(f"preprocess record is invalid: {exc}") from exc
        pre.validate()
        return pre

    def validate(self) -> None:
        from edgetl.errors import BadInputError

        problems = []
        if self.resize not in ("center-crop", "stretch"):
            problems.append(f"resize {self.resize!r} is not center-crop or stretch")
        if self.layout not in ("NCHW", "NHWC"):
            problems.append(f"layout {self.layout!r} is not NCHW or NHWC")
        if self.color_order not in ("RGB", "BGR"):
            problems.append(f"color_order {self.color_order!r} is not RGB or BGR")
        if self.interpolation not in _RESAMPLE:
            problems.append(f"interpolation {self.interpolation!r} is not bilinear or bicubic")
        if self.input_dtype not in _DTYPES:
            problems.append(f"input_dtype {self.input_dtype!r} is not one of {', '.join(_DTYPES)}")
        if self.input_dtype in ("int8", "uint8"):
            if self.input_scale is None or self.input_zero_point is None:
                problems.append("a quantized input needs input_scale and input_zero_point")
            if self.input_scale is not None and not (math.isfinite(self.input_scale) and self.input_scale > 0):
                problems.append(f"input_scale {self.input_scale!r} must be finite and positive")
            limits = np.iinfo(_DTYPES[self.input_dtype])
            if self.input_zero_point is not None and not limits.min <= self.input_zero_point <= limits.max:
                problems.append(f"input_zero_point {self.input_zero_point} is outside the {self.input_dtype} range")
        if len(self.size) != 2 or any(not 1 <= side <= MAX_SIDE for side in self.size):
            problems.append(f"size {list(self.size)} must be two pixel counts [H, W] from 1 to {MAX_SIDE}")
        if any(not math.isfinite(m) for m in self.mean):
            problems.append(f"mean {list(self.mean)} must be finite numbers")
        if any(not (math.isfinite(s) and s > 0) for s in self.std):
            problems.append("std values must be finite and positive")
        if not MIN_CROP_RATIO <= self.crop_ratio <= 1:
            problems.append(f"crop_ratio {self.crop_ratio!r} must lie in [{MIN_CROP_RATIO}, 1]")
        if problems:
            raise BadInputError("preprocess record is invalid: " + "; ".join(problems))

    # -- step 2: geometry, on 8-bit pixels -----------------------------------------
    def resize_crop(self, image: Image.Image) -> np.ndarray:
        """An RGB PIL image -> H x W x 3 uint8 array (before normalisation)."""
        height, width = self.size
        resample = _RESAMPLE[self.interpolation]
        if self.resize == "stretch":
            return np.asarray(image.resize((width, height), resample), dtype=np.uint8)
        cover_h, cover_w = height / self.crop_ratio, width / self.crop_ratio
        scale = max(cover_h / image.height, cover_w / image.width)
        new_w = max(width, int(math.floor(image.width * scale + 0.5)))
        new_h = max(height, int(math.floor(image.height * scale + 0.5)))
        left, top = (new_w - width) // 2, (new_h - height) // 2
        # Resample only the source region that survives the crop (PIL's `box`): the same
        # filter centres and support as resizing the whole image and cropping, at about
        # half the cost on a video frame. Fixed-point rounding inside PIL differs by
        # one grey level on ~0.02% of values; tests bound that.
        sx, sy = image.width / new_w, image.height / new_h
        box = (left * sx, top * sy, (left + width) * sx, (top + height) * sy)
        return np.asarray(image.resize((width, height), resample, box=box), dtype=np.uint8)

    # -- steps 3-4: values and layout ------------------------------------------------
    def pixel_offset_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """Step 3 as two float32 RGB triples on 0..255 pixels: x = (pixel - offset) * scale.

        The one definition of normalisation: `normalize` below and the training-time GPU
        normaliser (`edgetl.train.evaluate.Normalizer`) both use these numbers in this order,
        so the device and training see the same tensor (tests/test_preprocess.py compares them).
        """
        offset = np.asarray(self.mean, dtype=np.float32) * np.float32(255.0)
        scale = np.float32(1.0) / (np.asarray(self.std, dtype=np.float32) * np.float32(255.0))
        return offset, scale

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels (H,W,3) or (N,H,W,3) in RGB -> the model's input tensor (batched)."""
        batch = pixels[None] if pixels.ndim == 3 else pixels
        if self.color_order == "BGR":
            batch = batch[..., ::-1]
        # Lay out and copy while still 8-bit, then normalise in place with long inner
        # loops (a per-row table for NHWC): ~10x faster than the naive order, bit-identical.
        mean, inv_std = self.pixel_offset_scale()
        if self.layout == "NCHW":
            x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2)).astype(np.float32)
            x -= mean.reshape(1, 3, 1, 1)
            x *= inv_std.reshape(1, 3, 1, 1)
        else:
            x = np.ascontiguousarray(batch).astype(np.float32)
            rows = x.reshape(-1, x.shape[2] * 3)  # a view: (N*H, W*3)
            rows -= np.tile(mean, x.shape[2])
            rows *= np.tile(inv_std, x.shape[2])
        if self.input_dtype in ("int8", "uint8"):
            info = np.iinfo(_DTYPES[self.input_dtype])
            q = np.round(x / self.input_scale) + self.input_zero_point
            return np.clip(q, info.min, info.max).astype(_DTYPES[self.input_dtype])
        return x.astype(_DTYPES[self.input_dtype], copy=False)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """One RGB PIL image -> a batch of one, ready for the network."""
        return self.normalize(self.resize_crop(image))
