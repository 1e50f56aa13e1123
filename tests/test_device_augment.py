"""The GPU training path's pieces that run anywhere: batched colour jitter, the converter-free quantizer."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from conftest import REPO
from edgetl.contract.preprocess import Preprocess
from edgetl.data.transforms import train_transform
from edgetl.train.device_augment import DeviceColourJitter, apply_colour


def _photo() -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.astronaut()).resize((96, 96))


@pytest.mark.parametrize("factors", [(0.8, 1.2, 0.8), (1.2, 0.8, 1.2), (1.0, 1.0, 1.0), (1.19, 1.15, 0.81)])
def test_batched_colour_equals_pils_enhancers_in_the_same_order(factors):
    """Brightness, contrast and saturation as torchvision's ColorJitter applies them to a PIL image."""
    brightness, contrast, saturation = factors
    image = _photo()
    expected = ImageEnhance.Color(ImageEnhance.Contrast(ImageEnhance.Brightness(image).enhance(brightness))
                                  .enhance(contrast)).enhance(saturation)
    pixels = torch.from_numpy(np.asarray(image, np.float32).transpose(2, 0, 1).copy())[None]
    ones = torch.ones(1, 1, 1, 1)
    got = apply_colour(pixels, ones * brightness, ones * contrast, ones * saturation)[0].permute(1, 2, 0).numpy()
    # PIL rounds to uint8 after every step (and its contrast mean is an integer): a few levels at most.
    difference = np.abs(got - np.asarray(expected, np.float32))
    assert difference.max() <= 3.0 and difference.mean() < 1.5, (difference.max(), difference.mean())


def test_device_jitter_draws_per_image_factors_from_the_checkpointed_cpu_generator():
    jitter = DeviceColourJitter.for_preset("light")
    assert DeviceColourJitter.for_preset("strong") is None and DeviceColourJitter.for_preset("none") is None
    batch = torch.full((64, 3, 8, 8), 100.0)
    torch.manual_seed(5)
    first = jitter(batch)
    torch.manual_seed(5)
    again = jitter(batch)
    assert torch.equal(first, again)  # a resumed run (RNG restored) replays the same colours
    brightness_only = DeviceColourJitter(0.2, 0.0, 0.0)(batch)
    levels = brightness_only[:, 0, 0, 0]
    assert levels.min() >= 80 - 1e-4 and levels.max() <= 120 + 1e-4 and levels.std() > 5  # per image, +-20%
    assert first.min() >= 0 and first.max() <= 255


def test_light_preset_without_colour_leaves_colour_to_the_device():
    image = _photo()
    preprocess = Preprocess(size=(64, 64))
    torch.manual_seed(0)
    geometry_only = [train_transform("light", preprocess, colour=False)(image) for _ in range(8)]
    # With the jitter gone, every crop's pixels are pixels of the photo resized: the mean colour of a
    # large crop stays close to the photo's, while a brightness factor up to 1.2 would move it.
    photo_mean = np.asarray(image, np.float32).mean()
    assert all(p.shape == (64, 64, 3) and p.dtype == np.uint8 for p in geometry_only)
    torch.manual_seed(0)
    with_colour = [train_transform("light", preprocess)(image) for _ in range(8)]
    assert any(not np.array_equal(a, b) for a, b in zip(geometry_only, with_colour))
    assert max(abs(p.astype(np.float32).mean() - photo_mean) for p in geometry_only) < max(
        abs(p.astype(np.float32).mean() - photo_mean) for p in with_colour) + 1e-6


BLOCK_CONVERTER = """
import importlib.abc, sys
class NoConverter(importlib.abc.MetaPathFinder):  # a GPU server without the TFLite converter's wheels
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('ai_edge_litert', 'litert_converter', 'ai_edge_quantizer', 'jax'):
            raise ImportError(f'No module named {name!r}', name=name)
sys.meta_path.insert(0, NoConverter())
"""


def test_qat_quantizer_loads_without_the_tflite_converter_which_is_then_named_missing():
    code = BLOCK_CONVERTER + """
import torch
from edgetl.train import fake_quant
from edgetl.errors import MissingBackendError, require
quantizer = fake_quant.quantizer()
assert type(quantizer).__name__ == 'BackendFusedQuantizer'
try:
    require('litert_torch', 'export', 'TFLite conversion')
except MissingBackendError as error:
    print('MISSING', error.package)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MISSING litert_torch" in result.stdout
