"""Colour augmentation on the training device, batched, for the `light` preset on a GPU.

Why: a GPU trains a mobile backbone at 6,000-10,000 img/s (H100/H200, bf16), and the
CPU DataLoader workers cannot feed that while each image also goes through three PIL
colour enhancements (brightness, contrast, saturation: about a third of a worker's
time per image at 224 px). On a GPU the workers therefore do only the geometry
(random resized crop and flip, from the decoded-image cache) and this module jitters
colour for the whole batch in a handful of kernels.

Same distribution as torchvision's `ColorJitter(brightness=b, contrast=c, saturation=s)`
on a PIL image: each factor is uniform in [1 - x, 1 + x] per image, contrast blends
towards the image's mean grey level and saturation towards its own grey image (ITU-R
601 weights, as PIL's `L` mode), and values are clamped to [0, 255] after every step.
Two differences, both harmless to training and stated here so nobody is surprised:
the three steps run in one fixed order (torchvision shuffles the order per image),
and nothing is rounded to uint8 between steps.

The factors are drawn from the main process's CPU generator, which checkpoints save
and restore, so a resumed run replays the same colours as the uninterrupted one.
"""

from __future__ import annotations

import numpy as np

# ITU-R 601-2 luma, the weights of PIL's convert("L") that torchvision's ColorJitter uses.
GREY = (0.299, 0.587, 0.114)
LIGHT = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2}


class DeviceColourJitter:
    """Batched brightness/contrast/saturation jitter of float pixels in [0, 255], NCHW."""

    def __init__(self, brightness: float, contrast: float, saturation: float):
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    @classmethod
    def for_preset(cls, preset: str) -> "DeviceColourJitter | None":
        """The jitter a preset moves to the device, or None when the preset keeps colour on the CPU."""
        return cls(**LIGHT) if preset == "light" else None

    def _factors(self, count: int, spread: float, device):
        import torch

        drawn = torch.empty(count).uniform_(1.0 - spread, 1.0 + spread)  # CPU RNG: checkpointed
        return drawn.to(device, non_blocking=True).view(count, 1, 1, 1)

    def __call__(self, pixels):
        count, device = pixels.shape[0], pixels.device
        return apply_colour(pixels, self._factors(count, self.brightness, device),
                            self._factors(count, self.contrast, device), self._factors(count, self.saturation, device))


def apply_colour(pixels, brightness, contrast, saturation):
    """Brightness, contrast, saturation by the given per-image factors (N, 1, 1, 1), as PIL's ImageEnhance."""
    import torch

    grey_weights = torch.tensor(GREY, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    x = (pixels * brightness).clamp(0, 255)
    mean = (x * grey_weights).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean).clamp(0, 255)
    grey = (x * grey_weights).sum(dim=1, keepdim=True)
    return ((x - grey) * saturation + grey).clamp(0, 255)


class DeviceImageCache:
    """The decoded training images held on the GPU, cut into augmented batches there.

    Why: measured on an H200 (scripts/bench_train.py, 224 px, batch 256), 16 DataLoader
    workers cutting crops from the RAM cache fed Lite0 at 2,380 img/s against a 6,080 img/s
    ceiling (39%); the workers, not the GPU, set the pace. Here the uint8 images sit on the
    device, padded into one tensor, and a batch is one gather and one `grid_sample`: the
    random resized crop of the light preset (area 0.5-1, aspect 3/4-4/3, torchvision's
    sampling with its centre-crop fallback) and the horizontal flip, in one affine map per
    image. Bilinear without antialiasing: the crops shrink by at most 1.5x (the cache keeps
    the short side at 1.5x the input), where the difference is small.

    Crop boxes and flips are drawn from the main process's CPU generator, which
    checkpoints restore, so a resumed run cuts the same crops as the uninterrupted one.
    """

    SCALE = (0.5, 1.0)
    RATIO = (3 / 4, 4 / 3)

    def __init__(self, images: list, labels: list[int], size: tuple[int, int], device):
        import torch

        self.size, self.device = size, device
        heights = torch.tensor([image.shape[0] for image in images], dtype=torch.float32)
        widths = torch.tensor([image.shape[1] for image in images], dtype=torch.float32)
        self.padded = (int(heights.max()), int(widths.max()))
        self.pixels = torch.zeros((len(images), 3, *self.padded), dtype=torch.uint8, device=device)
        for index, image in enumerate(images):  # one copy each: the list never exists twice on the GPU
            height, width = image.shape[:2]
            self.pixels[index, :, :height, :width] = torch.from_numpy(np.array(image)).to(device).permute(2, 0, 1)
        self.heights, self.widths = heights, widths
        self.labels = torch.tensor(labels, dtype=torch.long, device=device)

    @staticmethod
    def bytes_needed(images: list) -> int:
        return len(images) * 3 * max(i.shape[0] for i in images) * max(i.shape[1] for i in images)

    @classmethod
    def crop_boxes(cls, heights, widths):
        """(top, left, height, width) per image, as torchvision's RandomResizedCrop.get_params draws them."""
        import math

        import torch

        count, tries = len(heights), 10
        area = (heights * widths)[:, None] * torch.empty(count, tries).uniform_(*cls.SCALE)
        log_ratio = torch.empty(count, tries).uniform_(math.log(cls.RATIO[0]), math.log(cls.RATIO[1]))
        aspect = torch.exp(log_ratio)
        crop_w = torch.round(torch.sqrt(area * aspect))
        crop_h = torch.round(torch.sqrt(area / aspect))
        fits = (crop_w > 0) & (crop_h > 0) & (crop_w <= widths[:, None]) & (crop_h <= heights[:, None])
        first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((count,), -1))
        pick = first.clamp(min=0)[:, None]
        h = torch.gather(crop_h, 1, pick)[:, 0]
        w = torch.gather(crop_w, 1, pick)[:, 0]
        # Fallback (no try fitted): the whole image, its aspect clamped into the ratio range, centred.
        whole = widths / heights
        fallback_w = torch.where(whole < cls.RATIO[0], widths,
                                 torch.where(whole > cls.RATIO[1], torch.round(heights * cls.RATIO[1]), widths))
        fallback_h = torch.where(whole < cls.RATIO[0], torch.round(widths / cls.RATIO[0]), heights)
        missed = first < 0
        h, w = torch.where(missed, fallback_h, h), torch.where(missed, fallback_w, w)
        top = torch.floor(torch.rand(count) * (heights - h + 1))
        left = torch.floor(torch.rand(count) * (widths - w + 1))
        return top, left, h, w

    def epoch(self, order: list[int], batch_size: int, drop_last: bool):
        """Batches of the images in `order` (the trainer passes its sampler's), cut as a DataLoader would."""
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for start in range(0, stop, batch_size):
            yield self.batch(order[start:start + batch_size])

    def batch(self, indices):
        """Augmented float pixels in [0, 255], (N, 3, H, W) on the device, and their labels."""
        import torch
        import torch.nn.functional as F

        index = torch.as_tensor(indices, dtype=torch.long)
        top, left, h, w = self.crop_boxes(self.heights[index], self.widths[index])
        flip = torch.where(torch.rand(len(index)) < 0.5, -1.0, 1.0)
        padded_h, padded_w = self.padded
        theta = torch.zeros(len(index), 2, 3)
        theta[:, 0, 0] = flip * w / padded_w
        theta[:, 0, 2] = (2 * left + w) / padded_w - 1
        theta[:, 1, 1] = h / padded_h
        theta[:, 1, 2] = (2 * top + h) / padded_h - 1
        theta = theta.to(self.device, non_blocking=True)
        grid = F.affine_grid(theta, [len(index), 3, *self.size], align_corners=False)
        source = self.pixels[index.to(self.device)].float()
        pixels = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return pixels, self.labels[index.to(self.device)]
