#!/usr/bin/env python
"""Does MediaPipe's own ImageClassifier run an edgetl .tflite, with no edgetl code?

Runs `mediapipe.tasks.python.vision.ImageClassifier` on an exported TFLite artifact
(labels and normalisation come from the model's TFLite Model Metadata only) and
prints JSON of each image's top-1. It needs a Python with mediapipe and Pillow, and
imports nothing of edgetl: run it from MediaPipe's own environment (its pins clash
with the export toolchain), e.g.

    mp=$(scripts/mediapipe_env.sh | tail -1)    # builds ~/.cache/edgetl/mediapipe-venv once
    "$mp" scripts/check_mediapipe.py ARTIFACT_DIR IMAGES [--limit N]

The one step the metadata cannot carry is edgetl's resize geometry: MediaPipe
stretches its region of interest to the input size. The region given here is the
centre crop `edgetl.contract.preprocess.Preprocess.resize_crop` keeps, computed from
the artifact's model.json (the same arithmetic: scale to cover size / crop_ratio,
round each side, centred window with floor offsets), in normalised coordinates.
Decoding matches edgetl's for ordinary files: EXIF orientation applied, then RGB.

MediaPipe resamples the region without antialiasing, edgetl (PIL) with it: the two
agree closely when the region is near the input size and drift apart as it grows
(measured: 98% top-1 agreement at 1.15x downscale, 94% at 3x on a weak texture
classifier). `--prescale` first resizes the whole image with PIL's antialiased filter
to the size edgetl's centre crop covers, so MediaPipe only cuts the window: what an
app can do with one resize call to get edgetl's answers at any camera resolution.

IMAGES: an image file, or a folder searched recursively; a file's parent folder name
is reported as its `label` (the layout `<class>/<image>` of edgetl's splits).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def centre_crop_roi(preprocess: dict, width: int, height: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) in 0..1 of the window edgetl's centre crop keeps from a width x height image."""
    out_h, out_w = preprocess["size"]
    if preprocess.get("resize", "center-crop") == "stretch":
        return 0.0, 0.0, 1.0, 1.0
    ratio = float(preprocess.get("crop_ratio", 0.875))
    scale = max(out_h / ratio / height, out_w / ratio / width)
    new_w = max(out_w, int(math.floor(width * scale + 0.5)))
    new_h = max(out_h, int(math.floor(height * scale + 0.5)))
    left, top = (new_w - out_w) // 2, (new_h - out_h) // 2
    return left / new_w, top / new_h, (left + out_w) / new_w, (top + out_h) / new_h


def prescale(image, preprocess: dict):
    """The image resized as edgetl's centre crop scales it (PIL, antialiased); the crop is then 1:1."""
    from PIL import Image

    out_h, out_w = preprocess["size"]
    if preprocess.get("resize", "center-crop") == "stretch":
        size = (out_w, out_h)
    else:
        ratio = float(preprocess.get("crop_ratio", 0.875))
        scale = max(out_h / ratio / image.height, out_w / ratio / image.width)
        size = (max(out_w, int(math.floor(image.width * scale + 0.5))),
                max(out_h, int(math.floor(image.height * scale + 0.5))))
    resample = {"bicubic": Image.Resampling.BICUBIC}.get(preprocess.get("interpolation"), Image.Resampling.BILINEAR)
    return image.resize(size, resample)


def images_in(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path, help="an exported TFLite artifact folder (model.tflite + model.json)")
    parser.add_argument("images", type=Path, help="an image, or a folder of <class>/<image> files")
    parser.add_argument("--limit", type=int, help="classify at most this many images")
    parser.add_argument("--prescale", action="store_true",
                        help="resize each image (antialiased, aspect kept) to the size the centre crop covers "
                             "before MediaPipe, which then only crops")
    args = parser.parse_args(argv)

    import mediapipe as mp
    import numpy as np
    from mediapipe.tasks.python import BaseOptions, vision
    from mediapipe.tasks.python.components.containers.rect import RectF
    from PIL import Image, ImageOps

    folder = args.artifact if args.artifact.is_dir() else args.artifact.parent
    sidecar = json.loads((folder / "model.json").read_text())
    model_path = folder / sidecar["model_file"]
    preprocess = sidecar["preprocess"]
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(model_path)),
                                            max_results=1)
    rows = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for path in images_in(args.images)[:args.limit]:
            with Image.open(path) as image:
                rgb = (ImageOps.exif_transpose(image) or image).convert("RGB")
            if args.prescale:
                rgb = prescale(rgb, preprocess)
            roi = centre_crop_roi(preprocess, rgb.width, rgb.height)
            frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(np.asarray(rgb)))
            processing = vision.ImageProcessingOptions(region_of_interest=RectF(left=roi[0], top=roi[1],
                                                                                right=roi[2], bottom=roi[3]))
            categories = classifier.classify(frame, processing).classifications[0].categories
            best = categories[0]
            rows.append({"file": str(path.relative_to(args.images)) if args.images.is_dir() else path.name,
                         "label": path.parent.name, "top1": best.category_name, "index": best.index,
                         "score": float(best.score), "roi": [round(v, 6) for v in roi]})
    json.dump({"model": str(model_path), "mediapipe": getattr(mp, "__version__", None), "prescale": args.prescale,
               "images": rows}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
