#!/usr/bin/env python
"""Training throughput: the synthetic ceiling vs the real pipeline from JPEG files.

For each backbone, images/second of the real training step (edgetl.train.trainer.train_step:
autocast, channels_last, AdamW) fed by
  synthetic  uint8 tensors already on the device (the ceiling: model + optimizer only),
  jpeg       the real DataLoader over JPEG files decoded per item (cache off),
  cached     the real DataLoader over the decoded-image RAM cache, all augmentation in the workers
             (edgetl's CPU path),
  cached_device_colour  the same cache, crops and flips in the workers, colour jitter batched on
             the device,
  device_cache  the cache held on the device, crops, flips and colour cut there in one batched
             grid_sample (edgetl's GPU path since issue 16, edgetl.train.device_augment),
  jpeg_gpu_decode  (CUDA only) workers only read file bytes; nvJPEG decodes the batch on the GPU
             (torchvision.io.decode_jpeg), crops, flips and colour on the GPU too. An
             alternative for data sets too large for the RAM cache; not in the trainer yet.
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
from edgetl.contract.images import load_rgb, shrink
from edgetl.contract.preprocess import Preprocess
from edgetl.data.dataset import TrainImages
from edgetl.data.transforms import train_transform
from edgetl.train.device_augment import DeviceColourJitter, DeviceImageCache
from edgetl.train.evaluate import Normalizer
from edgetl.train.trainer import autocast_factory, train_step


def write_jpegs(folder: Path, count: int, size=(640, 480)) -> list[str]:
    """Real photos (scikit-image) cut and jittered into `count` distinct JPEG files."""
    import skimage.data

    photos = [Image.fromarray(getattr(skimage.data, n)()).convert("RGB")
              for n in ("chelsea", "coffee", "astronaut", "rocket")]
    resized = [np.asarray(photo.resize(size), np.int16) for photo in photos]

    def write(i: int) -> str:  # one generator per file: the same files whatever the thread order
        noise = np.random.default_rng(i).integers(-8, 8, (size[1], size[0], 3))
        pixels = np.clip(resized[i % len(resized)] + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
        return f"{i:05d}.jpg"

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # PIL encodes outside the GIL
        return list(pool.map(write, range(count)))


def measure(step, batches, steps: int, warmup: int, device) -> float:
    iterator = iter(batches)
    for _ in range(warmup):
        step(*next(iterator))
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        batch = next(iterator)  # (pixels, labels[, device augmentation])
        step(*batch)
        seen += len(batch[1])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def cycle(loader):
    while True:
        yield from loader


def bench_model(name: str, args, files: list[str], folder: Path, device, cache: list[np.ndarray]) -> dict:
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

    def step(pixels, labels, augment=None):
        train_step(forward, optimizer, scaler, autocast, normalizer(pixels, augment),
                   labels.to(device, non_blocking=True), 0.1)

    result = {"model": name, "device": str(device), "precision": precision, "img_size": size,
              "batch_size": args.batch_size, "compile": args.compile}
    synthetic = torch.randint(0, 256, (args.batch_size, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)
    result["synthetic"] = round(measure(step, iter(lambda: (synthetic, labels), None), args.steps, args.warmup,
                                        device), 1)
    preprocess = Preprocess(size=(size, size), mean=spec.mean, std=spec.std)
    transform = train_transform("light", preprocess)
    workers = args.workers if args.workers >= 0 else (os.cpu_count() or 1)
    jitter = DeviceColourJitter.for_preset("light")
    labels_of = [i % 10 for i in range(len(files))]
    modes = {  # name: (dataset, batched device augmentation)
        "jpeg": (TrainImages(folder, files, labels_of, transform, None), None),
        "cached": (TrainImages(folder, files, labels_of, transform, cache), None),
        "cached_device_colour": (TrainImages(folder, files, labels_of,
                                             train_transform("light", preprocess, colour=False), cache), jitter),
    }
    if device.type == "cuda":
        modes["jpeg_gpu_decode"] = (JpegBytes(folder, files, labels_of), GpuDecode(size, jitter))
    wanted = set(args.modes.split(",")) if args.modes else {*modes, "device_cache"}
    if "device_cache" in wanted:
        on_device = DeviceImageCache(cache, labels_of, (size, size), device)

        def device_batches():
            while True:
                for pixels, labels in on_device.epoch(torch.randperm(len(files)).tolist(), args.batch_size, True):
                    yield pixels, labels, jitter

        result["device_cache"] = round(measure(step, device_batches(), args.steps, args.warmup, device), 1)
        result["device_cache_ratio"] = round(result["device_cache"] / result["synthetic"], 3)
        del on_device
    for mode, (dataset, augment) in modes.items():
        if mode not in wanted:
            continue
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                             num_workers=workers, pin_memory=device.type == "cuda",
                                             persistent_workers=workers > 0,
                                             prefetch_factor=4 if workers > 0 else None,
                                             collate_fn=getattr(dataset, "collate", None))
        if isinstance(augment, GpuDecode):
            batches = ((augment(data), labels) for data, labels in cycle(loader))
            try:  # an experiment: its failure must not cost the other numbers of a scarce GPU run
                result[mode] = round(measure(step, batches, args.steps, args.warmup, device), 1)
            except Exception as error:  # noqa: BLE001
                result[f"{mode}_error"] = f"{type(error).__name__}: {error}"[:300]
                continue
        else:
            batches = ((pixels, labels, augment) for pixels, labels in cycle(loader))
            result[mode] = round(measure(step, batches, args.steps, args.warmup, device), 1)
        result[f"{mode}_ratio"] = round(result[mode] / result["synthetic"], 3)
        del loader
    return result


class JpegBytes:
    """Items are (the file's bytes as a uint8 tensor, label): the workers only read."""

    def __init__(self, folder: Path, files: list[str], labels: list[int]):
        self.folder, self.files, self.labels = folder, files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        return torch.frombuffer(bytearray((self.folder / self.files[index]).read_bytes()), dtype=torch.uint8), \
            self.labels[index]

    @staticmethod
    def collate(items):
        return [data for data, _ in items], torch.tensor([label for _, label in items])


class GpuDecode:
    """nvJPEG batch decode, then the light preset's random resized crop, flip and colour on the GPU."""

    def __init__(self, size: int, jitter, device: str = "cuda"):
        self.size, self.jitter, self.device = size, jitter, device

    def __call__(self, encoded: list):
        import torchvision.transforms.v2.functional as F
        from torchvision.io import decode_jpeg

        images = decode_jpeg(encoded, device=self.device)
        heights = torch.tensor([float(image.shape[1]) for image in images])
        widths = torch.tensor([float(image.shape[2]) for image in images])
        boxes = zip(*(v.int().tolist() for v in DeviceImageCache.crop_boxes(heights, widths)))  # the trainer's draw
        flips = (torch.rand(len(images)) < 0.5).tolist()
        out = []
        for image, (top, left, h, w), flip in zip(images, boxes, flips):
            crop = F.resized_crop(image, top, left, h, w, [self.size, self.size], antialias=True)
            out.append(crop.flip(-1) if flip else crop)
        return self.jitter(torch.stack(out).float())  # colour on the device; Normalizer takes floats too


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
    parser.add_argument("--modes", default="", help="comma-separated pipelines beside synthetic (default: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    images_needed = args.batch_size * (args.steps + args.warmup + 2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = write_jpegs(folder, max(64, min(images_needed, 2048)))
        caches: dict[int, list[np.ndarray]] = {}  # by input size: decoded once, like edgetl's cache
        for name in args.models.split(","):
            size = args.img_size or get_spec(name).input_size
            if size not in caches:
                caches[size] = [np.asarray(shrink(load_rgb(folder / f), int(size * 1.5))) for f in files]
            row = bench_model(name, args, files, folder, device, caches[size])
            rows.append(row)
            shown = " | ".join(f"{mode} {row[mode]:8.1f} ({row[mode + '_ratio']:.0%})"
                               for mode in ("jpeg", "cached", "cached_device_colour", "device_cache", "jpeg_gpu_decode")
                               if mode in row)
            print(f"{name:22s} {row['device']:5s} {row['precision']:5s} {row['img_size']:4d}px "
                  f"synthetic {row['synthetic']:8.1f} img/s | {shown}", file=sys.stderr)
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else None
    report = {"device": gpu or f"cpu x{os.cpu_count()}", "torch": torch.__version__, "results": rows}
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
