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

from edgetl.contract.fields import Fields
from edgetl.contract.images import MAX_INPUT_SIDE

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8}
# A record read from a file is bounded: its sides by MAX_INPUT_SIDE (contract/images.py), and its
# crop ratio from below, as one near 0 overflows the cover-size arithmetic; real backbones use 0.3..1.
MIN_CROP_RATIO = 0.05
RECORD_HINT = "re-export the artifact (or rerun `edgetl finetune`) to write a valid preprocess record"


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
    def from_dict(cls, data: dict, where: str = "preprocess record is invalid") -> "Preprocess":
        """Read a record from JSON. Numbers from a hand-edited file may arrive as strings ("224");
        they are converted, never truncated (224.7 is refused, and so is `true` for 1)."""
        fields = Fields(where, RECORD_HINT)
        known = {k: v for k, v in fields.mapping(data).items() if k in cls.__dataclass_fields__ and k != "extra"}
        if "size" in known:
            size = known["size"]
            sides = list(size) if isinstance(size, (list, tuple)) else [size, size]
            if len(sides) != 2:
                fields.fail("size", f"must be [H, W] in whole pixels, got {size!r}")
            known["size"] = tuple(fields.number(side, "size", 1, MAX_INPUT_SIDE, integer=True, text=True)
                                  for side in sides)
        for key in ("mean", "std"):
            if key in known:
                known[key] = fields.numbers(known[key], key, 3, text=True)
        for key in ("crop_ratio", "input_scale"):
            if known.get(key) is not None:
                known[key] = float(fields.number(known[key], key, text=True))
        if known.get("input_zero_point") is not None:
            known["input_zero_point"] = fields.number(known["input_zero_point"], "input_zero_point",
                                                      integer=True, text=True)
        pre = cls(**known)
        pre.validate(fields)
        return pre

    def validate(self, fields: Fields | None = None) -> None:
        """Every field within what the steps below can compute; the first that is not is named."""
        fields = fields or Fields("preprocess record is invalid", RECORD_HINT)
        fields.choice(self.resize, ("center-crop", "stretch"), "resize")
        fields.choice(self.layout, ("NCHW", "NHWC"), "layout")
        fields.choice(self.color_order, ("RGB", "BGR"), "color_order")
        fields.choice(self.interpolation, _RESAMPLE, "interpolation")
        fields.choice(self.input_dtype, _DTYPES, "input_dtype")
        if len(self.size) != 2:
            fields.fail("size", f"must be two pixel counts [H, W], got {list(self.size)}")
        for side in self.size:
            fields.number(side, "size", 1, MAX_INPUT_SIDE, integer=True)
        fields.numbers(self.mean, "mean", 3)
        fields.numbers(self.std, "std", 3, low=0, low_open=True)
        fields.number(self.crop_ratio, "crop_ratio", MIN_CROP_RATIO, 1)
        if self.input_dtype in ("int8", "uint8"):
            limits = np.iinfo(_DTYPES[self.input_dtype])
            for name in ("input_scale", "input_zero_point"):
                if getattr(self, name) is None:
                    fields.fail(name, f"is required for a quantized ({self.input_dtype}) input")
            fields.number(self.input_scale, "input_scale", 0, low_open=True)
            fields.number(self.input_zero_point, "input_zero_point", int(limits.min), int(limits.max), integer=True)

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
