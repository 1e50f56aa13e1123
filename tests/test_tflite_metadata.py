"""TFLite Model Metadata in edgetl's .tflite: LiteRT runs it unchanged, the tables say the truth, MediaPipe agrees.

The first part runs everywhere the export extra is installed: a tiny real conv net
goes through edgetl's real TFLite exporter (litert-torch fp32, ai-edge-quantizer
int8; seconds), and the file is read back with the real LiteRT interpreter, the
TFLite flatbuffer schema of ai-edge-litert, the vendored metadata schema and zipfile.

The second part runs MediaPipe's own `ImageClassifier` (scripts/check_mediapipe.py)
in MediaPipe's own environment (scripts/mediapipe_env.sh builds it; EDGETL_MEDIAPIPE_PYTHON
names another), on a real fine-tune of EfficientNet-Lite0 over the photo
set and its held-out test images; skipped when no such Python has mediapipe.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

if not all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_quantizer", "ai_edge_litert", "torch")):
    pytest.skip("needs the export extra (litert-torch, ai-edge-quantizer, ai-edge-litert)", allow_module_level=True)
import torch  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from ai_edge_litert.tools import flatbuffer_utils  # noqa: E402
from PIL import Image  # noqa: E402

from conftest import REPO, run_cli  # noqa: E402
from edgetl.contract.preprocess import Preprocess  # noqa: E402
from edgetl.contract.sidecar import Sidecar  # noqa: E402
from edgetl.errors import BadInputError  # noqa: E402
from edgetl.export import tflite, tflite_metadata  # noqa: E402
import tflite_metadata_schema as schema  # noqa: E402  MediaPipe's generated reader, vendored for the tests
from edgetl.export.base import ExportRequest  # noqa: E402
from edgetl.export.calibration import CalibrationSet  # noqa: E402

# Lite0's normalisation (one value for all channels, as MediaPipe requires), a non-square input and a
# label that is not ASCII: the labels file is UTF-8, one line per class.
PRE = Preprocess(size=(24, 32), mean=(0.498,) * 3, std=(0.502,) * 3)
LABELS = ["cat", "crème brûlée", "dog", "emu"]


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, 2, 1),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(16, len(LABELS))).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny net exported fp32, int8 (float I/O, edgetl's default) and int8 with uint8 I/O."""
    root = tmp_path_factory.mktemp("tflite-metadata")
    work = root / "work"
    work.mkdir()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (16, *PRE.size, 3), dtype=np.uint8)
    calibration = CalibrationSet(pixels, PRE, "random pixels", {label: 4 for label in LABELS})
    model, results = _tiny_model(), {}
    for name, precision, options in (("fp32", "fp32", {}), ("int8", "int8", {}),
                                     ("int8-uint8-io", "int8", {"io_dtype": "uint8"})):
        out = root / name
        out.mkdir()
        request = ExportRequest(model=model, model_name="tiny", labels=LABELS, preprocess=PRE, out_dir=out,
                                workdir=work, precision=precision, calibration=calibration, options=options)
        exported = tflite.export(request)
        sidecar = Sidecar(format="tflite", precision=precision, requested_precision=precision,
                          model_file=exported.model_file, labels=LABELS,
                          preprocess=replace(PRE, layout="NHWC", input_dtype=exported.input.dtype,
                                             input_scale=exported.input.scale,
                                             input_zero_point=exported.input.zero_point),
                          input=exported.input, output=exported.output)
        (out / "model.json").write_text(sidecar.to_json())
        results[name] = {"dir": out, "exported": exported, "sidecar": sidecar}
    results["fp32_cache"] = work / tflite.FP32_CACHE  # the converter's own file: no metadata of any kind
    results["pixels"] = rng.integers(0, 256, (6, *PRE.size, 3), dtype=np.uint8)
    return results


def _without_standard_metadata(model_bytes: bytes) -> bytes:
    """The same model with the TFLITE_METADATA entry and the appended zip taken out."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    model.metadata = [m for m in model.metadata if m.name.decode() != "TFLITE_METADATA"]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _outputs(model_bytes: bytes, batch: np.ndarray) -> np.ndarray:
    interpreter = Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for x in batch:
        interpreter.set_tensor(inp["index"], x[None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(results)


def _standard(path: Path) -> tuple[schema.ModelMetadataT, dict[str, bytes], dict[str, bytes]]:
    """(the ModelMetadata tables, zip-packed files, raw metadata entries), read without tflite_metadata.read."""
    data = path.read_bytes()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    entries = {m.name.decode(): bytes(model.buffers[m.buffer].data) for m in model.metadata}
    raw = entries["TFLITE_METADATA"]
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(raw, 0)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        files = {info.filename: archive.read(info) for info in archive.infolist()}
    return schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(raw, 0)), files, entries


def _standard_files(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.mark.parametrize("name", ["fp32", "int8", "int8-uint8-io"])
def test_litert_gives_identical_outputs_with_the_metadata(tiny, name):
    data = (tiny[name]["dir"] / "model.tflite").read_bytes()
    assert data[4:8] == b"TFL3"  # still a TFLite flatbuffer from its first byte; the zip sits at the end
    sidecar = tiny[name]["sidecar"]
    batch = sidecar.preprocess.normalize(tiny["pixels"])
    with_metadata = _outputs(data, batch)
    assert np.array_equal(with_metadata, _outputs(_without_standard_metadata(data), batch))
    if name == "fp32":  # and the same as the converter's untouched file
        assert np.array_equal(with_metadata, _outputs(tiny["fp32_cache"].read_bytes(), batch))


@pytest.mark.parametrize("name", ["fp32", "int8"])
def test_metadata_tables_say_what_the_model_expects(tiny, name):
    metadata, files, entries = _standard(tiny[name]["dir"] / "model.tflite")
    assert metadata.name.decode() == f"tiny image classifier ({name})"
    assert metadata.version.decode().startswith(f"{name}, graph sha256 ")
    assert metadata.author.decode().startswith("edgetl ")
    description = metadata.description.decode()
    assert "4 classes" in description and "crop_ratio 0.875" in description and "logits" in description
    assert metadata.minParserVersion.decode() == tflite_metadata.MIN_PARSER_VERSION == "1.0.0"
    [subgraph] = metadata.subgraphMetadata
    [image], [score] = subgraph.inputTensorMetadata, subgraph.outputTensorMetadata

    assert image.content.contentPropertiesType == schema.ContentProperties.ImageProperties
    properties = image.content.contentProperties
    assert properties.colorSpace == schema.ColorSpaceType.RGB
    assert (properties.defaultSize.height, properties.defaultSize.width) == (24, 32)
    [unit] = image.processUnits
    assert unit.optionsType == schema.ProcessUnitOptions.NormalizationOptions
    mean, std = np.asarray(unit.options.mean), np.asarray(unit.options.std)
    np.testing.assert_allclose(mean, [255 * 0.498] * 3, rtol=1e-6)
    np.testing.assert_allclose(std, [255 * 0.502] * 3, rtol=1e-6)
    assert len(set(mean.tolist())) == 1 and len(set(std.tolist())) == 1  # MediaPipe refuses per-channel values
    # What a reader computes from the metadata alone is the tensor edgetl feeds: (pixel - mean) / std on 0..255.
    pixels = tiny["pixels"]
    from_metadata = (pixels.astype(np.float32) - mean.astype(np.float32)) / std.astype(np.float32)
    np.testing.assert_allclose(from_metadata, tiny[name]["sidecar"].preprocess.normalize(pixels), atol=1e-5)
    np.testing.assert_allclose(image.stats.min, (0 - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(image.stats.max, (255 - mean) / std, rtol=1e-6)

    assert score.content.contentPropertiesType == schema.ContentProperties.FeatureProperties
    [labels_entry] = score.associatedFiles
    assert labels_entry.name.decode() == "labels.txt"
    assert labels_entry.type == schema.AssociatedFileType.TENSOR_AXIS_LABELS
    assert list(files) == ["labels.txt"]
    assert files["labels.txt"].decode("utf-8").split("\n") == LABELS + [""]  # one per line, output order
    # Nothing that raises GetMinimumMetadataParserVersion above 1.0.0 (metadata_version.cc's rules).
    assert subgraph.inputProcessUnits is None and subgraph.outputProcessUnits is None
    assert subgraph.inputTensorGroups is None and subgraph.outputTensorGroups is None
    assert subgraph.customMetadata is None and labels_entry.version is None

    # edgetl's own entry is kept beside it.
    assert json.loads(entries["edgetl"])["labels"] == LABELS


def test_edgetl_runtime_loads_the_artifact(tiny):
    from edgetl.runtime import load

    folder = tiny["fp32"]["dir"]
    runner = load(folder)
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 70, 3), dtype=np.uint8))
    [top] = runner.classify([image], topk=len(LABELS))
    nhwc = replace(PRE, layout="NHWC")
    logits = _outputs(tiny["fp32_cache"].read_bytes(), nhwc.normalize(nhwc.resize_crop(image)))
    expected = np.exp(logits[0] - logits[0].max())
    expected /= expected.sum()
    assert [label for label, _ in top] == [LABELS[i] for i in np.argsort(-expected)]
    np.testing.assert_allclose([p for _, p in top], np.sort(expected)[::-1], rtol=1e-5)


def test_quantized_io_is_written_and_flagged(tiny):
    uint8 = tiny["int8-uint8-io"]
    assert uint8["exported"].input.dtype == "uint8"
    assert any("feed raw 0-255 pixels" in note for note in uint8["exported"].notes)
    assert not any(note.startswith("MediaPipe") for note in tiny["int8"]["exported"].notes)  # float I/O: fine
    metadata, files, _ = _standard(uint8["dir"] / "model.tflite")
    np.testing.assert_allclose(metadata.subgraphMetadata[0].inputTensorMetadata[0].processUnits[0].options.mean,
                               [255 * 0.498] * 3, rtol=1e-6)  # the float model's normalisation, as the schema says
    assert files["labels.txt"].decode("utf-8").split("\n")[:-1] == LABELS


def test_populating_again_gives_the_same_file(tiny):
    data = (tiny["fp32"]["dir"] / "model.tflite").read_bytes()
    again = tflite_metadata.add_classifier_metadata(data, LABELS, PRE, "tiny", "fp32")
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(again))
    assert [m.name.decode() for m in model.metadata].count("TFLITE_METADATA") == 1
    with zipfile.ZipFile(io.BytesIO(again)) as archive:
        assert archive.namelist() == ["labels.txt"]
    # The graph digest in `version` differs (it names the bytes it was given); the rest is the same.
    assert _standard_files(again) == _standard_files(data)
    assert len(again) == len(data)


def test_what_the_standard_cannot_say():
    imagenet = Preprocess(size=(8, 8), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    metadata = schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(
        tflite_metadata.build(imagenet, ["a", "b"], "m", "v", "d"), 0))
    options = metadata.subgraphMetadata[0].inputTensorMetadata[0].processUnits[0].options
    np.testing.assert_allclose(options.mean, [123.675, 116.28, 103.53], rtol=1e-6)  # per channel, as edgetl feeds
    bgr = schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(
        tflite_metadata.build(replace(imagenet, color_order="BGR"), ["a", "b"], "m", "v", "d"), 0))
    image = bgr.subgraphMetadata[0].inputTensorMetadata[0]
    assert image.processUnits is None and image.content.contentProperties.colorSpace == schema.ColorSpaceType.UNKNOWN
    assert "per-channel" in tflite_metadata.compatibility_notes(imagenet, "float32", "float32")[0]
    assert "BGR" in tflite_metadata.compatibility_notes(replace(PRE, color_order="BGR"), "float32", "float32")[0]
    assert tflite_metadata.compatibility_notes(PRE, "float32", "float32") == []
    with pytest.raises(BadInputError, match="line"):
        tflite_metadata.labels_file(["a", "two\nlines"])


# -- MediaPipe's own ImageClassifier ---------------------------------------------------------------------------
MEDIAPIPE_VENV = Path(os.environ.get("EDGETL_MEDIAPIPE_VENV") or Path.home() / ".cache/edgetl/mediapipe-venv")


def _mediapipe_python() -> str | None:
    """EDGETL_MEDIAPIPE_PYTHON, else the venv scripts/mediapipe_env.sh builds (.ci/run builds it once)."""
    python = os.environ.get("EDGETL_MEDIAPIPE_PYTHON") or str(MEDIAPIPE_VENV / "bin" / "python")
    if not Path(python).is_file():
        return None
    probe = subprocess.run([python, "-c", "import mediapipe.tasks.python.vision"], capture_output=True, timeout=120)
    return python if probe.returncode == 0 else None


@pytest.fixture(scope="module")
def mediapipe_python() -> str:
    python = _mediapipe_python()
    if python is None:
        pytest.skip("no Python with mediapipe: run scripts/mediapipe_env.sh (or set EDGETL_MEDIAPIPE_PYTHON)")
    return python


def _held_out(test_split: Path, out: Path) -> Path:
    """The held-out images as they come (square) and cut to 3:2, so the region of interest is not the whole image."""
    for path in sorted(test_split.glob("*/*.jpg")):
        (out / path.parent.name).mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            image.save(out / path.parent.name / f"{path.stem}-square.png")
            cut = image.height // 6
            image.crop((0, cut, image.width, image.height - cut)).save(out / path.parent.name / f"{path.stem}-wide.png")
    return out


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory, mediapipe_python) -> dict:
    """A short real Lite0 fine-tune on the photo set (96 px input), exported to TFLite fp32 and int8 by
    `edgetl export`'s code, and two held-out sets: 128 px photos (the crop is 1.15x the input) and
    288 px photos (3.4x, a camera frame's scale); 640 images each. About 2 minutes on 2 cores."""
    pytest.importorskip("skimage")
    from edgetl.data.photos import write_photo_set
    from edgetl.export import ExportSettings, export_run
    from edgetl.train import TrainConfig, finetune

    root = tmp_path_factory.mktemp("mediapipe")
    photos, large = root / "photos", root / "photos-288"
    write_photo_set(photos, counts={"train": 60, "val": 16, "test": 32}, size=128)
    write_photo_set(large, counts={"train": 0, "val": 0, "test": 32}, size=288)  # other crops of the test strips
    run = finetune(TrainConfig(data=str(photos), model="efficientnet_lite0", out=str(root / "run"), epochs=4,
                               img_size=96, batch_size=16, lr=0.003, backbone_lr_mult=1.0, augment="none",
                               strategy="finetune", seed=1))
    exported = export_run(run["run_dir"], ["tflite"], ["fp32", "int8"], ExportSettings(calib_size=64, max_drop=None),
                          out=root / "export")
    return {"artifacts": {a["precision"]: Path(a["path"]) for a in exported["artifacts"]},
            "held_out": {"128": _held_out(photos / "test", root / "held-out-128"),
                         "288": _held_out(large / "test", root / "held-out-288")}}


def _edgetl_top1(artifact: Path, images: Path) -> dict[str, str]:
    result = run_cli("run", str(artifact), "--source", str(images), "--json-lines", "--topk", "1", check=True)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {str(Path(r["source"]).relative_to(images)): r["topk"][0][0] for r in lines if "frame" in r}


def _mediapipe_top1(python: str, artifact: Path, images: Path, *options: str) -> dict[str, str]:
    result = subprocess.run([python, str(REPO / "scripts" / "check_mediapipe.py"), str(artifact), str(images),
                             *options], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return {row["file"]: row["top1"] for row in json.loads(result.stdout)["images"]}


# The region of interest alone on photos near the input size (the check), and the antialiased
# prescale an app does at camera resolution, where MediaPipe's own resampling (no antialiasing) drifts:
# measured 93.6% (fp32) / 94.4% (int8) on the 288 px set without --prescale, 99.8% / 100% with it.
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("held_out, options", [("128", ()), ("288", ("--prescale",))], ids=["roi", "prescale"])
def test_mediapipe_agrees_with_edgetl_run(photo_run, mediapipe_python, precision, held_out, options):
    artifact, images = photo_run["artifacts"][precision], photo_run["held_out"][held_out]
    ours = _edgetl_top1(artifact, images)
    theirs = _mediapipe_top1(mediapipe_python, artifact, images, *options)
    assert len(ours) == len(theirs) == 640 and set(ours) == set(theirs)
    agreement = np.mean([ours[name] == theirs[name] for name in ours])
    accuracy = np.mean([ours[name] == name.split("/")[0] for name in ours])
    sys.stderr.write(f"\nMediaPipe {' '.join(options) or '(region of interest only)'} vs edgetl run, {precision}, "
                     f"{held_out} px: {agreement:.4f} agreement on {len(ours)} held-out images "
                     f"(edgetl top-1 accuracy {accuracy:.4f})\n")
    assert accuracy > 0.5  # a real classifier, or agreement would mean little
    assert agreement >= 0.95


def test_mediapipe_refuses_per_channel_normalisation(tiny, mediapipe_python, tmp_path):
    """Pins the limitation the exporter's notes report: if a MediaPipe release lifts it, this says so."""
    imagenet = replace(PRE, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    data = tflite_metadata.add_classifier_metadata(tiny["fp32_cache"].read_bytes(), LABELS, imagenet, "tiny", "fp32")
    (tmp_path / "model.tflite").write_bytes(data)
    (tmp_path / "model.json").write_text(json.dumps({"model_file": "model.tflite", "preprocess": imagenet.to_dict()}))
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "black.png")
    result = subprocess.run([mediapipe_python, str(REPO / "scripts" / "check_mediapipe.py"), str(tmp_path),
                             str(tmp_path / "black.png")], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Per-channel image normalization is not available" in result.stderr


def test_the_writers_slots_are_the_schemas():
    """Every field slot in tflite_metadata.TABLES is the one MediaPipe's generated code writes."""
    import inspect
    import re

    for kind, (count, fields) in tflite_metadata.TABLES.items():
        start = inspect.getsource(getattr(schema, f"{kind}Start"))
        assert f"StartObject({count})" in start, kind
        for field, (slot, _) in fields.items():
            camel = "".join(part.capitalize() for part in field.split("_"))
            adder = inspect.getsource(getattr(schema, f"{kind}Add{camel}"))
            assert re.search(rf"Slot\({slot},", adder), f"{kind}.{field}"
    assert schema.ColorSpaceType.RGB == tflite_metadata.COLOR_RGB
    assert schema.ContentProperties.ImageProperties == tflite_metadata.CONTENT_IMAGE_PROPERTIES
    assert schema.ContentProperties.FeatureProperties == tflite_metadata.CONTENT_FEATURE_PROPERTIES
    assert schema.ProcessUnitOptions.NormalizationOptions == tflite_metadata.UNIT_NORMALIZATION_OPTIONS
    assert schema.AssociatedFileType.TENSOR_AXIS_LABELS == tflite_metadata.FILE_TENSOR_AXIS_LABELS
