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
