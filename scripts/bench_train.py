#!/usr/bin/env python
"""Training throughput: the synthetic ceiling vs the real pipeline from JPEG files.

For each backbone, images/second of the real training step (edgetl.train.trainer.train_step:
autocast, channels_last, AdamW) fed by
  synthetic  uint8 tensors already on the device (the ceiling: model + optimizer only),
  jpeg       the real DataLoader over JPEG files decoded per item (cache off),
  cached     the real DataLoader over the decoded-image RAM cache (edgetl's default).
The ratio real/synthetic tells whether the input pipeline starves the accelerator
(target on an H100: >= 70%).

    python scripts/bench_train.py                       # CPU defaults (small, minutes)
    python scripts/bench_train.py --device cuda --batch-size 256 --steps 50 --compile
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edgetl.backbones import create_model, get_spec
from edgetl.contract.preprocess import Preprocess
from edgetl.data.dataset import TrainImages
from edgetl.data.transforms import train_transform
from edgetl.runtime.images import load_rgb, shrink
from edgetl.train.evaluate import Normalizer
from edgetl.train.trainer import autocast_factory, train_step


def write_jpegs(folder: Path, count: int, size=(640, 480)) -> list[str]:
    """Real photos (scikit-image) cut and jittered into `count` distinct JPEG files."""
    import skimage.data

    photos = [Image.fromarray(getattr(skimage.data, n)()).convert("RGB")
              for n in ("chelsea", "coffee", "astronaut", "rocket")]
    rng = np.random.default_rng(0)
    names = []
    for i in range(count):
        photo = photos[i % len(photos)].resize(size)
        pixels = np.clip(np.asarray(photo, np.int16) + rng.integers(-8, 8, (size[1], size[0], 3)), 0, 255)
        name = f"{i:05d}.jpg"
        Image.fromarray(pixels.astype(np.uint8)).save(folder / name, quality=90)
        names.append(name)
    return names


def measure(step, batches, steps: int, warmup: int, device) -> float:
    iterator = iter(batches)
    for _ in range(warmup):
        step(*next(iterator))
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        pixels, labels = next(iterator)
        step(pixels, labels)
        seen += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def cycle(loader):
    while True:
        yield from loader


def bench_model(name: str, args, files: list[str], folder: Path, device) -> dict:
    spec = get_spec(name)
    size = args.img_size or spec.input_size
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    model = create_model(name, num_classes=10, pretrained=False).to(device).to(memory_format=torch.channels_last)
    model.train()
    forward = torch.compile(model) if args.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    autocast = autocast_factory(device.type, precision)
    normalizer = Normalizer(spec.preprocess, device, channels_last=True)

    def step(pixels, labels):
        train_step(forward, optimizer, scaler, autocast, normalizer(pixels), labels.to(device, non_blocking=True), 0.1)

    result = {"model": name, "device": str(device), "precision": precision, "img_size": size,
              "batch_size": args.batch_size, "compile": args.compile}
    synthetic = torch.randint(0, 256, (args.batch_size, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)
    result["synthetic"] = round(measure(step, iter(lambda: (synthetic, labels), None), args.steps, args.warmup,
                                        device), 1)
    preprocess = Preprocess(size=(size, size), mean=spec.mean, std=spec.std)
    transform = train_transform("light", preprocess)
    workers = args.workers if args.workers >= 0 else (os.cpu_count() or 1)
    for mode in ("jpeg", "cached"):
        cached = None
        if mode == "cached":
            cached = [np.asarray(shrink(load_rgb(folder / f), int(size * 1.5))) for f in files]
        dataset = TrainImages(folder, files, [i % 10 for i in range(len(files))], transform, cached)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                             num_workers=workers, pin_memory=device.type == "cuda",
                                             persistent_workers=workers > 0,
                                             prefetch_factor=4 if workers > 0 else None)
        result[mode] = round(measure(step, cycle(loader), args.steps, args.warmup, device), 1)
    result["jpeg_ratio"] = round(result["jpeg"] / result["synthetic"], 3)
    result["cached_ratio"] = round(result["cached"] / result["synthetic"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilenet_v3_small,mobilenet_v3_large,mobilenet_v2,efficientnet_lite0")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--img-size", type=int, default=0, help="0: each recipe's input size")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=-1)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    images_needed = args.batch_size * (args.steps + args.warmup + 2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = write_jpegs(folder, max(64, min(images_needed, 4096)))
        for name in args.models.split(","):
            row = bench_model(name, args, files, folder, device)
            rows.append(row)
            print(f"{name:22s} {row['device']:5s} {row['precision']:5s} {row['img_size']:4d}px "
                  f"synthetic {row['synthetic']:9.1f} img/s | jpeg {row['jpeg']:9.1f} ({row['jpeg_ratio']:.0%})"
                  f" | cached {row['cached']:9.1f} ({row['cached_ratio']:.0%})", file=sys.stderr)
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else None
    report = {"device": gpu or f"cpu x{os.cpu_count()}", "torch": torch.__version__, "results": rows}
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
