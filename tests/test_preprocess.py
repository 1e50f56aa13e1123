"""`Preprocess`: the one evaluation preprocessing shared by training, export, parity and the device."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from edgetl.contract.preprocess import Preprocess
from edgetl.errors import BadInputError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BILINEAR = Image.Resampling.BILINEAR


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


# -- geometry ------------------------------------------------------------------------------

@pytest.mark.parametrize("width, height, resized, offsets", [
    (640, 480, (341, 256), (58, 16)),  # 256 / 480 * 640 = 341.33 -> 341
    (480, 640, (256, 341), (16, 58)),  # portrait: the same, transposed
    (640, 427, (384, 256), (80, 16)),  # 256 / 427 * 640 = 383.7 -> 384: rounded to nearest, not truncated
    (224, 224, (256, 256), (16, 16)),  # upscaled to cover 256
])
def test_center_crop_geometry(width, height, resized, offsets):
    image = _noise(width, height)
    pre = Preprocess(size=(224, 224), crop_ratio=0.875)
    out = pre.resize_crop(image)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    left, top = offsets
    expected = np.asarray(image.resize(resized, BILINEAR).crop((left, top, left + 224, top + 224)))
    assert_same_pixels(out, expected)


def assert_same_pixels(ours: np.ndarray, reference: np.ndarray) -> None:
    """Resampling only the kept box equals resize-then-crop up to PIL's fixed-point rounding:
    at most one grey level, on a small fraction of values (measured: 0.02% of values for
    640x480 noise, 4% where the scale is a simple fraction such as 640 -> 384)."""
    diff = np.abs(ours.astype(np.int16) - reference.astype(np.int16))
    assert ours.shape == reference.shape
    assert diff.max() <= 1 and (diff > 0).mean() < 0.06, (diff.max(), (diff > 0).mean())


def test_center_crop_keeps_the_centre_and_drops_the_edges():
    pixels = np.full((480, 640, 3), 128, np.uint8)
    pixels[190:290, 270:370] = (255, 0, 0)  # a red 100 x 100 centre
    pixels[:, :80] = (0, 0, 255)  # a blue left strip, outside the 87.5 % crop (it keeps x in ~[109, 531))
    pixels[:, -80:] = (0, 255, 0)  # a green right strip, likewise
    out = Preprocess(size=(224, 224)).resize_crop(Image.fromarray(pixels)).astype(int)
    # red centre: 100 px of 480 scale to ~53 px of 256, centred at (112, 112)
    assert (out[112 - 20:112 + 20, 112 - 20:112 + 20] == (255, 0, 0)).all()
    # corners and the border are the grey background: the coloured strips were cut away
    for corner in (out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]):
        assert tuple(corner) == (128, 128, 128)
    assert (out[:, 0] == 128).all() and (out[:, -1] == 128).all()


@pytest.mark.parametrize("width, height", [(640, 480), (100, 300), (31, 17), (224, 160)])
@pytest.mark.parametrize("size", [(224, 224), (96, 128)])
def test_stretch_gives_exactly_the_size(width, height, size):
    image = _noise(width, height)
    pre = Preprocess(size=size, resize="stretch")
    out = pre.resize_crop(image)
    assert out.shape == (*size, 3) and out.dtype == np.uint8
    assert np.array_equal(out, np.asarray(image.resize((size[1], size[0]), BILINEAR)))
    assert pre(image).shape == (1, 3, *size)


def test_bicubic_interpolation_is_used_when_asked():
    image = _noise(300, 200)
    out = Preprocess(size=(64, 64), resize="stretch", interpolation="bicubic").resize_crop(image)
    assert np.array_equal(out, np.asarray(image.resize((64, 64), Image.Resampling.BICUBIC)))
    assert not np.array_equal(out, np.asarray(image.resize((64, 64), BILINEAR)))


# -- values and layout ---------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, 37, 128, 255])
def test_normalize_constant_image(value):
    pixels = np.full((4, 5, 3), value, np.uint8)
    x = Preprocess(size=(4, 5)).normalize(pixels)
    assert x.dtype == np.float32 and x.shape == (1, 3, 4, 5)
    expected = (value / 255.0 - np.array(MEAN)) / np.array(STD)
    for channel in range(3):
        assert np.abs(x[0, channel] - expected[channel]).max() < 1e-6


def test_nchw_and_nhwc_are_transposes():
    pixels = np.asarray(_noise(6, 4))[None].repeat(2, axis=0)  # a batch of 2, (2, 4, 6, 3)
    nchw = Preprocess(size=(4, 6), layout="NCHW").normalize(pixels)
    nhwc = Preprocess(size=(4, 6), layout="NHWC").normalize(pixels)
    assert nchw.shape == (2, 3, 4, 6) and nhwc.shape == (2, 4, 6, 3)
    assert np.array_equal(nchw.transpose(0, 2, 3, 1), nhwc)
    assert nchw.flags["C_CONTIGUOUS"] and nhwc.flags["C_CONTIGUOUS"]


def test_bgr_swaps_channels():
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    half = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    rgb = Preprocess(size=(2, 2), **half).normalize(red)
    bgr = Preprocess(size=(2, 2), color_order="BGR", **half).normalize(red)
    assert (rgb[0, 0] == 1).all() and (rgb[0, 2] == -1).all()
    assert (bgr[0, 2] == 1).all() and (bgr[0, 0] == -1).all()  # red is the last channel in BGR


def test_bgr_mean_and_std_are_listed_in_color_order():
    # "x = (pixel / 255 - mean) / std per channel in color_order": mean[0] belongs to B in BGR.
    pixels = np.asarray(_noise(5, 3))
    rgb = Preprocess(size=(3, 5), mean=MEAN, std=STD).normalize(pixels)
    bgr = Preprocess(size=(3, 5), color_order="BGR", mean=MEAN[::-1], std=STD[::-1]).normalize(pixels)
    assert np.allclose(bgr[:, ::-1], rgb, atol=1e-6)


@pytest.mark.parametrize("dtype, zero_point, low, high", [("int8", -3, -128, 127), ("uint8", 128, 0, 255)])
def test_quantized_input(dtype, zero_point, low, high):
    scale = 0.02
    values = dict(mean=(0.5, 0.5, 0.5), std=(0.1, 0.1, 0.1))  # x spans [-5, 5]: beyond the int8 range
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    real = Preprocess(size=(16, 16), **values).normalize(pixels)
    q = Preprocess(size=(16, 16), input_dtype=dtype, input_scale=scale, input_zero_point=zero_point,
                   **values).normalize(pixels)
    assert q.dtype == np.dtype(dtype) and q.shape == real.shape
    expected = np.clip(np.round(real / scale) + zero_point, low, high)
    assert np.array_equal(q.astype(int), expected.astype(int))
    # both ends saturate, the middle does not
    assert q.min() == low and q.max() == high
    assert low < int(q[0, 0, 8, 0]) < high  # pixel 128: x = 0.0196 -> round(0.98) = 1
    assert int(q[0, 0, 8, 0]) == 1 + zero_point


def test_to_dict_from_dict_round_trip():
    pre = Preprocess(size=(160, 128), resize="stretch", crop_ratio=0.9, interpolation="bicubic",
                     mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), layout="NHWC", color_order="BGR",
                     input_dtype="int8", input_scale=0.0173, input_zero_point=-14)
    data = pre.to_dict()
    assert data["size"] == [160, 128] and "extra" not in data
    through_json = json.loads(json.dumps(data))
    assert Preprocess.from_dict(through_json) == pre
    assert Preprocess.from_dict(data).to_dict() == data
    assert Preprocess.from_dict(Preprocess().to_dict()) == Preprocess()
    # other keys in a sidecar (e.g. "model") are ignored
    assert Preprocess.from_dict({**data, "model": "mobilenet_v3_small"}) == pre


@pytest.mark.parametrize("patch, field", [
    ({"layout": "CHW"}, "layout"),
    ({"std": [0.2, -0.1, 0.2]}, "std"),
    ({"input_dtype": "int8"}, "input_scale"),
    ({"input_dtype": "int8", "input_scale": 0.1}, "input_zero_point"),
    ({"resize": "letterbox"}, "resize"),
    ({"color_order": "RGBA"}, "color_order"),
    ({"interpolation": "nearest"}, "interpolation"),
    ({"input_dtype": "float64"}, "input_dtype"),
    ({"crop_ratio": 1.5}, "crop_ratio"),
    ({"crop_ratio": "abc"}, "crop_ratio"),
    ({"mean": [0.5, 0.5]}, "mean"),
    ({"size": [0, 224]}, "size"),
    ({"input_dtype": "int8", "input_scale": 0.0, "input_zero_point": 0}, "input_scale"),
    ({"input_dtype": "int8", "input_scale": 0.1, "input_zero_point": 200}, "input_zero_point"),
])
def test_invalid_records_name_the_field(patch, field):
    with pytest.raises(BadInputError, match=field) as caught:
        Preprocess.from_dict({**Preprocess().to_dict(), **patch})
    assert caught.value.message.startswith("preprocess record is invalid")
    assert caught.value.exit_code == 2


# -- against torchvision -----------------------------------------------------------------------

def test_matches_torchvision_resize_centercrop_normalize():
    T = pytest.importorskip("torchvision.transforms")
    skdata = pytest.importorskip("skimage.data")
    photo = Image.fromarray(skdata.chelsea()).resize((640, 480), Image.Resampling.LANCZOS)  # a real cat, 4:3

    reference = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)])
    pre = Preprocess(size=(224, 224), crop_ratio=224 / 256)
    # the same pixels after the geometry (both PIL bilinear, up to fixed-point rounding) ...
    assert_same_pixels(pre.resize_crop(photo), np.asarray(T.CenterCrop(224)(T.Resize(256)(photo))))
    # ... and the same tensor after normalisation: exact where the pixels are, one grey level elsewhere
    ours = pre(photo)
    theirs = reference(photo).numpy()[None]
    assert ours.shape == theirs.shape == (1, 3, 224, 224) and ours.dtype == np.float32
    diff = np.abs(ours - theirs)
    assert (diff < 1e-5).mean() > 0.94 and diff.max() < 1.01 / 255 / min(STD)


# -- video frames --------------------------------------------------------------------------

def test_opencv_frames_become_rgb_images():
    from edgetl.contract.images import from_bgr_array

    rng = np.random.default_rng(3)
    bgr = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(from_bgr_array(bgr)), bgr[:, :, ::-1])
    view = bgr[::2, 1::2]  # a non-contiguous slice, as a region of interest would be
    assert np.array_equal(np.asarray(from_bgr_array(view)), view[:, :, ::-1])
    grey = bgr[:, :, 0]
    image = from_bgr_array(grey)
    assert image.mode == "RGB" and np.array_equal(np.asarray(image)[:, :, 1], grey)


@pytest.mark.parametrize("recipe", ["efficientnet_lite0", "mobilenet_v3_large"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_training_normaliser_and_device_preprocessing_give_the_same_tensor(recipe, device):
    """Normalisation is defined once (Preprocess.pixel_offset_scale): the torch normaliser training and
    training-time evaluation use on the GPU, and the numpy path every runtime uses on the device, turn
    the same 8-bit pixels into the same network input."""
    torch = pytest.importorskip("torch")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from edgetl.backbones import get_spec
    from edgetl.train.evaluate import Normalizer

    preprocess = get_spec(recipe).preprocess
    pixels = np.random.default_rng(3).integers(0, 256, (4, *preprocess.size, 3), dtype=np.uint8)
    pixels[0, :8] = 0
    pixels[0, 8:16] = 255  # both ends of the range
    on_device = preprocess.normalize(pixels)  # NCHW float32, as the runtimes feed it
    chw = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))  # how training batches travel
    for channels_last in (False, True):
        trained = Normalizer(preprocess, torch.device(device), channels_last)(chw).cpu().numpy()
        assert trained.dtype == np.float32 and trained.shape == on_device.shape
        if device == "cpu":
            assert np.array_equal(trained, on_device)
        else:
            np.testing.assert_allclose(trained, on_device, rtol=0, atol=1e-6)
    assert not np.allclose(on_device[0, 0], pixels[0, ..., 0] / 255.0)  # normalised, not just rescaled
