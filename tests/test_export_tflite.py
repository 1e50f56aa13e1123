"""TFLite export on a real EfficientNet-Lite0, run by the real LiteRT interpreter.

One fp32 conversion (~25 s) is shared through the module's workdir; the int8
attempts quantize that cached file with ai-edge-quantizer, calibrated on real
handwritten-digit images cut with the evaluation preprocessing.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

if not all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_quantizer", "ai_edge_litert", "torch")):
    pytest.skip("needs the export extra (litert-torch, ai-edge-quantizer, ai-edge-litert)", allow_module_level=True)
import torch  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from edgetl.backbones import create_model  # noqa: E402
from edgetl.contract.preprocess import Preprocess  # noqa: E402
from edgetl.data.demo import write_demo_data  # noqa: E402
from edgetl.errors import BadInputError  # noqa: E402
from edgetl.export import tflite  # noqa: E402
from edgetl.export.base import ExportRequest  # noqa: E402
from edgetl.export.calibration import CalibrationSet  # noqa: E402
from edgetl.contract.images import load_rgb  # noqa: E402

PRE = Preprocess(size=(64, 64), mean=(0.498,) * 3, std=(0.502,) * 3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Pretrained Lite0 whose new 10-class head is fitted (ridge regression) to 40 real digit images."""
    root = tmp_path_factory.mktemp("tflite")
    write_demo_data(root / "digits", per_class=4, size=64)
    paths = sorted((root / "digits").glob("*/*.png"))
    labels = sorted({p.parent.name for p in paths})
    pixels = np.stack([PRE.resize_crop(load_rgb(p)) for p in paths])
    targets = torch.tensor([labels.index(p.parent.name) for p in paths])
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", num_classes=10).eval()
    x = torch.from_numpy(PRE.normalize(pixels))
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
        a = torch.cat([feats, torch.ones(len(feats), 1)], 1)
        y = torch.nn.functional.one_hot(targets, 10).float() * 4 - 0.4
        w = torch.linalg.solve(a.T @ a + torch.eye(a.shape[1]), a.T @ y)
        model.classifier.weight.copy_(w[:-1].T)
        model.classifier.bias.copy_(w[-1])
        reference = model(x).numpy()
    calibration = CalibrationSet(pixels, PRE, "demo digits", {label: 4 for label in labels})
    workdir = root / "work"
    workdir.mkdir()

    def request(precision: str, name: str, **options) -> ExportRequest:
        out = root / name
        out.mkdir()
        return ExportRequest(model=model, model_name="efficientnet_lite0", labels=labels, preprocess=PRE,
                             out_dir=out, workdir=workdir, precision=precision, calibration=calibration,
                             options=options)

    nhwc = PRE.normalize(pixels).transpose(0, 2, 3, 1)
    return {"request": request, "reference": reference, "nhwc": np.ascontiguousarray(nhwc), "labels": labels}


def run_tflite(path: Path, exported, inputs: np.ndarray) -> np.ndarray:
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    logits = []
    for x in inputs:
        x = x[None]
        if exported.input.dtype != "float32":
            info = np.iinfo(exported.input.dtype)
            q = np.round(x / exported.input.scale) + exported.input.zero_point
            x = np.clip(q, info.min, info.max).astype(exported.input.dtype)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"]).astype(np.float32)
        if exported.output.dtype != "float32":
            y = (y - exported.output.zero_point) * exported.output.scale
        logits.append(y[0])
    return np.stack(logits)


@pytest.fixture(scope="module")
def fp32(setup):
    request = setup["request"]("fp32", "fp32", metadata_json=json.dumps({"labels": setup["labels"]}))
    exported = tflite.export(request)
    return request, exported


def test_fp32_is_nhwc_and_matches_torch(setup, fp32):
    request, exported = fp32
    assert (request.workdir / tflite.FP32_CACHE).is_file()
    assert exported.layout == "NHWC" and exported.model_file == "model.tflite"
    assert exported.input.shape == [1, 64, 64, 3] and exported.input.dtype == "float32"
    assert exported.output.shape == [1, 10] and exported.quantization is None
    logits = run_tflite(request.out_dir / "model.tflite", exported, setup["nhwc"])
    reference = setup["reference"]
    assert np.abs(logits - reference).max() < 1e-3
    assert (logits.argmax(1) == reference.argmax(1)).all()


def test_metadata_json_is_embedded(setup, fp32):
    from ai_edge_litert.tools import flatbuffer_utils

    request, _ = fp32
    model = flatbuffer_utils.read_model(str(request.out_dir / "model.tflite"))
    entries = {m.name.decode(): m.buffer for m in model.metadata}
    data = bytes(model.buffers[entries["edgetl"]].data)
    assert json.loads(data)["labels"] == setup["labels"]


def test_int8_is_full_integer_and_agrees(setup, fp32):
    request = setup["request"]("int8", "int8", calib_images=32)
    exported = tflite.export(request)
    q = exported.quantization
    assert q["recipe"] == "static_wi8_ai8" and q["activations"] == "int8" and q["calibration_images"] == 32
    assert q["full_integer"] and q["float_ops"] == {}
    assert set(q["weight_dtypes"]) == {"int8"} and q["weight_dtypes"]["int8"] >= 40
    assert q["float_tensors"] == 2 and q["int8_tensors"] > 100  # only the float32 graph input and output
    assert exported.input.shape == [1, 64, 64, 3] and exported.input.dtype == "float32"
    details = Interpreter(model_path=str(request.out_dir / "model.tflite")).get_tensor_details()
    floats = {d["name"] for d in details if d["dtype"] == np.float32}
    assert floats == {exported.input.name, exported.output.name}  # no float weights or activations inside
    logits = run_tflite(request.out_dir / "model.tflite", exported, setup["nhwc"])
    reference = setup["reference"]
    agreement = (logits.argmax(1) == reference.argmax(1)).mean()
    assert agreement >= 0.9, agreement


def test_int8_io_and_float_layers(setup, fp32):
    request = setup["request"]("int8", "int8-io", io_dtype="int8", float_layers=["conv_stem", "classifier"])
    exported = tflite.export(request)
    assert exported.input.dtype == "int8" and exported.input.scale > 0
    assert isinstance(exported.input.zero_point, int)
    assert exported.output.dtype == "int8" and exported.output.scale > 0  # float classifier, int8 graph output
    q = exported.quantization
    assert q["float_layer_ops"] == 2 and q["float_ops"] == {"CONV_2D": 1, "FULLY_CONNECTED": 1}
    assert not q["full_integer"]
    logits = run_tflite(request.out_dir / "model.tflite", exported, setup["nhwc"])
    assert (logits.argmax(1) == setup["reference"].argmax(1)).mean() >= 0.9


def test_bad_options_are_refused(setup, fp32):
    with pytest.raises(BadInputError):
        tflite.export(setup["request"]("fp32", "bad-io", io_dtype="int8"))
    with pytest.raises(BadInputError):
        tflite.export(setup["request"]("int8", "bad-recipe", recipe="static_wi4_ai8"))


def test_fp16_weights_keep_float_io(setup, fp32):
    request = setup["request"]("fp16", "fp16")
    exported = tflite.export(request)
    assert exported.input.dtype == "float32" and exported.output.dtype == "float32"
    assert set(exported.quantization["weight_dtypes"]) == {"float16"}
    logits = run_tflite(request.out_dir / "model.tflite", exported, setup["nhwc"])
    assert np.abs(logits - setup["reference"]).max() < 0.1
    assert (logits.argmax(1) == setup["reference"].argmax(1)).all()


def test_uint8_io_for_accelerators(setup, fp32):
    request = setup["request"]("int8", "uint8-io", io_dtype="uint8")
    exported = tflite.export(request)
    assert exported.input.dtype == "uint8" and exported.output.dtype == "uint8"
    assert exported.quantization["full_integer"] and exported.quantization["io"] == "uint8"
    logits = run_tflite(request.out_dir / "model.tflite", exported, setup["nhwc"])
    assert (logits.argmax(1) == setup["reference"].argmax(1)).mean() >= 0.9
