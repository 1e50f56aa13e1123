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
from edgetl.export.qat import graph
from edgetl.errors import MissingBackendError, require
quantizer = graph.quantizer()
assert type(quantizer).__name__ == 'BackendFusedQuantizer'
try:
    require('litert_torch', 'export', 'TFLite conversion')
except MissingBackendError as error:
    print('MISSING', error.package)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MISSING litert_torch" in result.stdout


def _cache_images():
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    # Landscape, portrait and a 3:1 strip: padding, both aspect fallbacks and every size differ.
    return [photos[0][:120, :160], photos[1][:150, :90].copy(), photos[2][:40, :120].copy()]


def test_device_cache_crops_where_torchvision_would_and_cuts_exactly_that_box():
    import torch.nn.functional as F

    from edgetl.train.device_augment import DeviceImageCache

    images = _cache_images()
    cache = DeviceImageCache(images, [0, 1, 2], (32, 32), torch.device("cpu"))
    heights = torch.tensor([120.0, 150.0, 40.0] * 200)
    widths = torch.tensor([160.0, 90.0, 120.0] * 200)
    torch.manual_seed(0)
    top, left, h, w = cache.crop_boxes(heights, widths)
    assert bool(((top >= 0) & (left >= 0) & (top + h <= heights) & (left + w <= widths)).all())
    fraction, aspect = h * w / (heights * widths), w / h
    strip = heights == 40  # 3:1 photo: no draw fits, and the centre fallback keeps aspect 4/3 (44% of it)
    assert float(fraction[~strip].min()) >= 0.5 - 0.05 and float(fraction.max()) <= 1.0
    assert float(aspect.min()) >= 0.75 - 0.05 and float(aspect.max()) <= 4 / 3 + 0.05
    assert bool((h[strip] == 40).all()) and bool((w[strip] == 53).all())

    torch.manual_seed(3)
    pixels, labels = cache.batch([2, 0, 1, 0])
    assert pixels.shape == (4, 3, 32, 32) and labels.tolist() == [2, 0, 1, 0]
    torch.manual_seed(3)  # the same draws, replayed: the box and flip of every image
    index = torch.tensor([2, 0, 1, 0])
    top, left, h, w = cache.crop_boxes(cache.heights[index], cache.widths[index])
    flips = torch.rand(4) < 0.5
    for row, i in enumerate(index.tolist()):
        t, l, hh, ww = (int(v[row]) for v in (top, left, h, w))
        region = torch.from_numpy(images[i][t:t + hh, l:l + ww].astype(np.float32)).permute(2, 0, 1)[None]
        expected = F.interpolate(region, size=(32, 32), mode="bilinear", align_corners=False)[0]
        if flips[row]:
            expected = expected.flip(-1)
        assert float((pixels[row] - expected).abs().max()) < 0.5, row  # the same box, the same pixels


def test_device_cache_epoch_follows_the_samplers_order_and_drops_like_the_loader():
    from torch.utils.data import DataLoader, DistributedSampler

    from edgetl.train.device_augment import DeviceImageCache

    images = _cache_images() * 4
    cache = DeviceImageCache(images, list(range(12)), (16, 16), torch.device("cpu"))
    sampler = DistributedSampler(list(range(12)), num_replicas=1, rank=0, shuffle=True, seed=7)
    sampler.set_epoch(2)
    loader = DataLoader(list(range(12)), batch_size=5, sampler=sampler, drop_last=True)
    expected = [batch.tolist() for batch in loader]
    got = [labels.tolist() for _, labels in cache.epoch(list(sampler), loader.batch_size, loader.drop_last)]
    assert got == expected and len(got) == len(loader) == 2
