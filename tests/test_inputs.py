"""Hostile and odd inputs on real files: decompression bombs, 16-bit photos, crafted sidecars,
fixed-batch models and file names that do not fit a split file (issue 12, items 9, 10 and 12).

Every image here is a real file written to tmp_path; the fixed-batch model is a real ONNX
graph run by onnxruntime; the CLI is the real `edgetl` entry point in a subprocess.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from edgetl.contract.images import MAX_PIXELS, PIXELS_ENV, UnreadableImageError, load_rgb, to_rgb
from edgetl.contract.preprocess import Preprocess
from edgetl.contract.sidecar import GoldenSample, Sidecar, TensorInfo
from edgetl.data.folder import Sample, scan_image_folder
from edgetl.data.splits import load_split, save_splits
from edgetl.data.validate import check_images
from edgetl.errors import BadInputError, DatasetError


def _photo(path: Path, seed: int = 0, size: tuple[int, int] = (24, 20)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(path)
    return path


# -- decompression bombs -------------------------------------------------------------------

def _bomb_png(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit greyscale PNG of one colour, streamed row by row: kilobytes on disk for any size.

    Written by hand rather than with PIL so that making a 144-megapixel test file does not
    itself cost the 144 MB PIL would hold in memory for it.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0, then black pixels
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_the_bomb_generator_writes_a_real_png(tmp_path):
    image = load_rgb(_bomb_png(tmp_path / "small.png", 37, 11))
    assert image.size == (37, 11) and not np.asarray(image).any()  # decodes, all black


# Run in a fresh interpreter and read VmHWM, the peak of this process's own address space:
# ru_maxrss would not do, since Linux carries it over execve from the forking parent (pytest,
# with torch and models loaded, is well over a gigabyte by the time this test runs in CI).
_REFUSE = """
import sys
from edgetl.contract.images import UnreadableImageError, load_rgb
for path in sys.argv[1:]:
    try:
        load_rgb(path)
        print("DECODED", path)
    except UnreadableImageError as exc:
        print("REFUSED", exc.message, "|", exc.hint)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print("MAXRSS_MB", int(hwm.split()[1]) // 1024)
"""


def test_decompression_bomb_is_refused_from_its_header_with_bounded_memory(tmp_path):
    # 12000 x 12000 sits where PIL only warns (above 89 M pixels, below its 179 M error): the
    # old load_rgb decoded it, peaking near 850 MB. 20000 x 20000 is where PIL itself raises.
    bombs = [_bomb_png(tmp_path / "cat" / "bomb 12k.png", 12000, 12000),
             _bomb_png(tmp_path / "cat" / "bomb 20k.png", 20000, 20000)]
    for bomb in bombs:
        assert bomb.stat().st_size < 100_000  # tiny on disk
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    env.pop(PIXELS_ENV, None)
    result = subprocess.run([sys.executable, "-c", _REFUSE, *map(str, bombs)], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for bomb, pixels, line in zip(bombs, (144_000_000, 400_000_000), lines):
        assert line.startswith(f"REFUSED {bomb}: {pixels} pixels exceed the limit of {MAX_PIXELS}"), line
        assert f"{PIXELS_ENV}={pixels}" in line  # the hint says how to admit a genuine image
    assert int(lines[-1].split()[1]) < 500, lines[-1]
    # Refused by edgetl's own limit, so PIL's "could be decompression bomb" warning stays quiet.
    assert "DecompressionBombWarning" not in result.stderr, result.stderr


def test_pixel_limit_follows_the_environment(tmp_path, monkeypatch):
    path = _photo(tmp_path / "photo.png", size=(20, 20))
    monkeypatch.setenv(PIXELS_ENV, "399")
    with pytest.raises(UnreadableImageError, match=r"photo\.png: 400 pixels exceed the limit of 399") as caught:
        load_rgb(path)
    assert f"{PIXELS_ENV}=400" in caught.value.hint
    monkeypatch.setenv(PIXELS_ENV, "400")
    assert load_rgb(path).size == (20, 20)
    monkeypatch.setenv(PIXELS_ENV, "lots")
    with pytest.raises(BadInputError, match=PIXELS_ENV):
        load_rgb(path)


def test_a_bomb_in_a_training_folder_is_skipped_with_a_warning_naming_it(tmp_path, capsys):
    root = tmp_path / "data"
    for label in ("cat", "dog"):
        for i in range(2):
            _photo(root / label / f"{i}.png", seed=i)
    _bomb_png(root / "dog" / "huge.png", 12000, 12000)
    folder = scan_image_folder(root)
    result = check_images(folder.root, folder.all_samples())
    assert {s.path for s in result.kept} == {"cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png"}
    assert [path for path, _ in result.skipped] == ["dog/huge.png"]
    reason = result.skipped[0][1]
    assert reason.startswith("144000000 pixels exceed the limit") and PIXELS_ENV in reason
    err = " ".join(capsys.readouterr().err.split())
    assert "skipped 1 unreadable file(s) of 5" in err and "dog/huge.png: 144000000 pixels" in err


# -- 16-bit images -----------------------------------------------------------------------------

def test_sixteen_bit_png_gradient_converts_exactly(tmp_path):
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)  # every 16-bit value once
    path = tmp_path / "gradient16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == "I;16"
    expected = ((values.astype(np.int64) + 128) // 257).astype(np.uint8)  # round(v * 255 / 65535)
    # ... which is exactly what the float formula used before gave, with no tie anywhere
    assert np.array_equal(expected, np.floor(values / 65535.0 * 255.0 + 0.5).astype(np.uint8))
    pixels = np.asarray(load_rgb(path))
    assert pixels.shape == (256, 256, 3)
    assert all(np.array_equal(pixels[..., c], expected) for c in range(3))
    assert pixels[0, 0, 0] == 0 and pixels[-1, -1, 0] == 255
    # Big-endian 16-bit (TIFF) means the same numbers.
    big_endian = Image.frombytes("I;16B", (256, 256), values.astype(">u2").tobytes())
    assert np.array_equal(np.asarray(to_rgb(big_endian))[..., 0], expected)


def test_mode_i_scales_only_above_255_and_clips_negatives():
    wide = np.array([[-300, 0, 128, 255], [256, 32768, 65535, 70000]], np.int32)
    assert np.array_equal(np.asarray(to_rgb(Image.fromarray(wide)))[..., 0],
                          [[0, 0, 0, 1], [1, 128, 255, 255]])
    narrow = np.array([[-5, 0, 17, 255]], np.int32)  # fits 8 bits: kept as is, not scaled
    assert np.array_equal(np.asarray(to_rgb(Image.fromarray(narrow)))[..., 0], [[0, 0, 17, 255]])


def test_sixteen_bit_conversion_needs_no_whole_frame_wide_copy():
    rng = np.random.default_rng(3)
    side = 2000
    image = Image.fromarray(rng.integers(0, 65536, (side, side), dtype=np.uint16))
    assert image.mode == "I;16"
    tracemalloc.start()
    try:
        converted = to_rgb(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert converted.mode == "RGB" and converted.size == (side, side)
    # A float64 copy alone is 8 bytes a pixel (the old code peaked above 16).
    assert peak < 3 * side * side, f"{peak / side / side:.2f} bytes a pixel"


# -- sidecars ---------------------------------------------------------------------------------

def _sidecar_dict(**changes) -> dict:
    """A valid sidecar as `to_dict` writes it (an int8 TFLite-like one, so every field is present)."""
    sidecar = Sidecar(
        format="tflite", precision="int8", requested_precision="int8", model_file="model.tflite",
        labels=["cat", "dog", "fox"],
        preprocess=Preprocess(size=(32, 32), layout="NHWC", input_dtype="int8", input_scale=0.02,
                              input_zero_point=-3),
        input=TensorInfo("input", [1, 32, 32, 3], "int8", 0.02, -3),
        output=TensorInfo("output", [1, 3], "int8", 0.1, 5),
        files={"model.tflite": "0" * 64, "golden/00.png": "1" * 64},
        golden=[GoldenSample(file="golden/00.png", label="dog", top1=1, topk=[[1, 0.9], [0, 0.05]],
                             logits=[0.1, 2.0, -1.0], artifact_top1=1, artifact_logits=[0.2, 1.9, -1.1])],
    )
    data = json.loads(sidecar.to_json())
    for dotted, value in changes.items():  # "golden.0.file" sets data["golden"][0]["file"]
        *path, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
        node = data
        for step in path:
            node = node[step]
        node[last] = value
    return data


def test_the_valid_sidecar_reads_back():
    data = _sidecar_dict()
    assert Sidecar.from_dict(data).to_dict() == data
    # OpenVINO's two files and nested golden names are legitimate relative paths.
    xml = Sidecar.from_dict({**data, "format": "openvino", "model_file": "model.xml",
                             "files": {"model.xml": "a" * 64, "model.bin": "b" * 64, "golden/00.png": "c" * 64}})
    assert xml.model_file == "model.xml"
    # A dynamic batch, written as a name, is not a fixed batch.
    assert Sidecar.from_dict(_sidecar_dict(**{"input.shape": ["batch", 32, 32, 3]})).input.shape[0] == "batch"


CRAFTED = [
    ({"model_file": "../model.tflite"}, "model_file", "'..'"),
    ({"model_file": "/etc/passwd"}, "model_file", "absolute"),
    ({"model_file": "C:model.tflite"}, "model_file", "absolute"),
    ({"model_file": "sub\\model.tflite"}, "model_file", "backslash"),
    ({"model_file": "model\n.tflite"}, "model_file", "control character"),
    ({"model_file": "model\0.tflite"}, "model_file", "control character"),
    ({"model_file": ""}, "model_file", "not a file name"),
    ({"model_file": 7}, "model_file", "not a file name"),
    ({"golden.0.file": "../../outside.png"}, "golden[0].file", "'..'"),
    ({"golden.0.file": "golden//00.png"}, "golden[0].file", "empty parts"),
    ({"golden.0.file": "/tmp/00.png"}, "golden[0].file", "absolute"),
    ({"golden.0.top1": 3}, "golden[0].top1", "class index"),
    ({"golden.0.artifact_top1": -1}, "golden[0].artifact_top1", "class index"),
    ({"golden.0.logits": [1.0, 2.0]}, "golden[0].logits", "3 finite numbers"),
    ({"files": {"../model.tflite": "0" * 64}}, "files['../model.tflite']", "'..'"),
    ({"files": {"/abs/model.tflite": "0" * 64}}, "files['/abs/model.tflite']", "absolute"),
    ({"files": ["model.tflite"]}, "files", "sha256"),
    ({"preprocess.size": [100000, 224]}, "preprocess", "size"),
    ({"preprocess.size": [224.5, 224]}, "preprocess", "size"),
    ({"preprocess.size": [True, 224]}, "preprocess", "size"),
    ({"preprocess.crop_ratio": 0}, "preprocess", "crop_ratio"),
    ({"preprocess.crop_ratio": 1e-300}, "preprocess", "crop_ratio"),
    ({"preprocess.crop_ratio": 1.5}, "preprocess", "crop_ratio"),
    ({"preprocess.mean": [float("nan"), 0.4, 0.4]}, "preprocess", "mean"),
    ({"preprocess.std": [float("inf"), 0.2, 0.2]}, "preprocess", "std"),
    ({"preprocess.std": [0.0, 0.2, 0.2]}, "preprocess", "std"),
    ({"preprocess.input_scale": float("inf")}, "preprocess", "input_scale"),
    ({"preprocess.input_scale": 10 ** 400}, "preprocess", "input_scale"),
    ({"preprocess.input_zero_point": 300}, "preprocess", "input_zero_point"),
    ({"input.scale": 0.0}, "input.scale", "finite positive"),
    ({"input.scale": -0.5}, "input.scale", "finite positive"),
    ({"output.scale": float("nan")}, "output.scale", "finite positive"),
    ({"output.scale": 10 ** 400}, "output.scale", "finite positive"),
    ({"output.zero_point": 128}, "output.zero_point", "-128..127 for int8"),
    ({"output.zero_point": 2.5}, "output.zero_point", "not an integer"),
    ({"output.dtype": "uint8", "output.zero_point": -1}, "output.zero_point", "0..255 for uint8"),
    ({"output.dtype": "complex128"}, "output.dtype", "not one of"),
    ({"output.dtype": ["int8"]}, "output.dtype", "not one of"),
    ({"preprocess": [224, 224]}, "preprocess", "JSON object"),
    ({"golden": {"file": "golden/00.png"}}, "golden", "list of samples"),
    ({"input.shape": [10 ** 9, 32, 32, 3]}, "input.shape[0]", "fixed batch"),
    ({"input.shape": [0, 32, 32, 3]}, "input.shape[0]", "positive size"),
    ({"input.shape": [1, 32.5, 32, 3]}, "input.shape[1]", "positive size"),
    # each bound alone holds; their product is 12 GiB of input per call
    ({"input.shape": [1024, 1024, 1024, 3]}, "input.shape", "values per call"),
    ({"labels": ["cat", "dog\nfox: 99%"]}, "labels[1]", "control or invisible character '\\n'"),
    ({"labels": ["cat", "\x1b]0;owned\x07dog"]}, "labels[1]", "control or invisible"),
    ({"labels": ["cat", "tab\there"]}, "labels[1]", "control or invisible"),
    ({"labels": ["cat", " "]}, "labels[1]", "is empty"),
    ({"labels": ["cat", "x" * 1024]}, "labels[1]", "more than 200"),
    ({"labels": [f"c{i}" for i in range(50_001)]}, "labels", "more than 50000"),
]


@pytest.mark.parametrize("changes, field, problem", CRAFTED, ids=[c[1] + ":" + c[2] for c in CRAFTED])
def test_a_crafted_sidecar_field_is_refused_by_name(changes, field, problem):
    with pytest.raises(BadInputError) as caught:
        Sidecar.from_dict(_sidecar_dict(**changes), "sidecar x/model.json")
    message = caught.value.message
    assert message.startswith(f"sidecar x/model.json: field '{field}' "), message
    assert problem in message and "\n" not in message, message
    assert caught.value.exit_code == 2


def test_cli_refuses_a_crafted_sidecar_in_one_line_without_a_traceback(tmp_path):
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (tmp_path / "model.tflite").write_bytes(b"not a model; never opened")
    (artifact / "model.json").write_text(json.dumps(_sidecar_dict(model_file="../model.tflite")))
    photo = _photo(tmp_path / "photo.png")
    result = run_cli("run", str(artifact), "--source", str(photo), timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "field 'model_file'" in lines[0] and "'..'" in lines[0], lines
    assert len(lines) == 2 and lines[1].strip().startswith("hint:"), lines
    assert "Traceback" not in result.stderr


# -- fixed-batch models ------------------------------------------------------------------------

def _fixed_batch_artifact(folder: Path, batch: int = 4) -> Path:
    """A real ONNX graph with a fixed batch: [B,3,8,8] -> GlobalAveragePool -> Flatten -> [B,3]."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["y"])],
        "mean_per_channel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    sidecar = Sidecar(format="onnx", precision="fp32", requested_precision="fp32", model_file="model.onnx",
                      labels=["red", "green", "blue"], preprocess=Preprocess(size=(8, 8)),
                      input=TensorInfo("x", [batch, 3, 8, 8], "float32"),
                      output=TensorInfo("y", [batch, 3], "float32"))
    (folder / "model.json").write_text(sidecar.to_json())
    return folder


@pytest.mark.parametrize("count", [0, 1, 4, 6, 9])
def test_fixed_batch_model_pads_the_last_chunk_instead_of_recursing(tmp_path, count):
    from edgetl.runtime import load

    runner = load(_fixed_batch_artifact(tmp_path / "artifact"), threads=1)
    assert runner.fixed_batch == 4
    batch = np.random.default_rng(count).normal(size=(count, 3, 8, 8)).astype(np.float32)
    logits = runner.infer(batch)
    assert logits.shape == (count, 3) and logits.dtype == np.float32
    assert np.allclose(logits, batch.mean(axis=(2, 3)), atol=1e-5)  # each row its own image's answer


def test_fixed_batch_model_classifies_a_list_of_photos(tmp_path):
    from edgetl.runtime import load

    runner = load(_fixed_batch_artifact(tmp_path / "artifact"), threads=1)
    photos = [_photo(tmp_path / f"{i}.png", seed=i) for i in range(6)]
    results = runner.classify(photos, topk=1)
    assert len(results) == 6
    expected = [runner.labels[int(np.argmax(runner.preprocess(p)[0].mean(axis=(1, 2))))] for p in photos]
    assert [r[0][0] for r in results] == expected


# -- file names and split files ---------------------------------------------------------------

def _two_classes(root: Path) -> Path:
    for label in ("cat", "dog"):
        for i in range(2):
            _photo(root / label / f"{i}.png", seed=i)
    return root


@pytest.mark.parametrize("name, problem", [("a\tb.png", "a tab"), ("line\nbreak.png", "a newline"),
                                           ("cr\r.png", "a carriage return")])
def test_a_name_that_cannot_be_a_split_line_is_refused_by_name(tmp_path, name, problem):
    root = _two_classes(tmp_path / "data")
    _photo(root / "dog" / name)
    with pytest.raises(DatasetError) as caught:
        scan_image_folder(root)
    message = caught.value.message
    assert repr(f"dog/{name}") in message and problem in message, message
    assert "\n" not in message and "\r" not in message and "\t" not in message
    assert caught.value.exit_code == 2


def test_a_name_that_is_not_utf8_is_refused_by_name(tmp_path):
    root = _two_classes(tmp_path / "data")
    raw = os.fsencode(root / "cat") + b"/caf\xe9.png"
    try:
        with open(raw, "wb") as handle:
            handle.write((root / "cat" / "0.png").read_bytes())
    except OSError:
        pytest.skip("this filesystem refuses non-UTF-8 names")
    with pytest.raises(DatasetError, match="not valid UTF-8") as caught:
        scan_image_folder(root)
    assert "caf" in caught.value.message


def test_names_with_other_line_break_characters_survive_the_split_files(tmp_path):
    # str.splitlines() breaks at all of these; each is a legal character in a file name.
    names = ["form\x0cfeed.png", "vt\x0b.png", "sep\x1c.png", "nel\x85.png", "ls\u2028.png", "café.png"]
    root = _two_classes(tmp_path / "data")
    for name in names:
        _photo(root / "cat" / name)
    folder = scan_image_folder(root)
    run_dir = tmp_path / "run"
    save_splits(run_dir, {"train": folder.samples})
    again = load_split(run_dir, "train")
    assert again == folder.samples
    assert {f"cat/{name}" for name in names} <= {s.path for s in again}
    for sample in again:  # each still names the real file
        assert load_rgb(root / sample.path).size == (24, 20)


def test_save_splits_refuses_a_sample_it_could_not_read_back(tmp_path):
    with pytest.raises(DatasetError, match="a newline"):
        save_splits(tmp_path / "run", {"train": [Sample("cat/a\nb.png", "cat")]})
    assert not (tmp_path / "run" / "splits" / "train.txt").exists()


def test_a_split_file_edited_on_windows_still_reads(tmp_path):
    splits = tmp_path / "run" / "splits"
    splits.mkdir(parents=True)
    (splits / "val.txt").write_bytes("cat\tcat/0.png\r\ndog\tdog/é 1.png\r\n".encode("utf-8"))
    assert load_split(tmp_path / "run", "val") == [Sample("cat/0.png", "cat"), Sample("dog/é 1.png", "dog")]


# -- one way to name a bad field (contract/fields.py) -----------------------------------------

def test_training_configs_name_the_file_and_field_like_every_other_reader(tmp_path):
    from edgetl.train.config import TrainConfig

    config = tmp_path / "run.yaml"
    config.write_text("data: photos\nmodel: efficientnet_lite0\nepoch: 3\n")  # a typo of `epochs`
    with pytest.raises(BadInputError) as typo:
        TrainConfig.from_yaml(config)
    assert typo.value.message == f"training config {config}: field 'epoch' is not a training option"
    config.write_text("data: photos\nepochs: 3\n")
    with pytest.raises(BadInputError, match=r"field 'model' is required"):
        TrainConfig.from_yaml(config)
    with pytest.raises(BadInputError) as bad:
        TrainConfig(data="photos", model="efficientnet_lite0", label_smoothing=1.5).resolve()
    assert bad.value.message == "training config: field 'label_smoothing' is 1.5: it must be in [0, 1)"
    result = run_cli("finetune", str(tmp_path), "--model", "efficientnet_lite0", "--lr", "0")
    assert result.returncode == 2 and "field 'lr' is 0.0" in result.stderr


def test_a_backend_that_is_installed_but_broken_is_not_called_missing(tmp_path, monkeypatch):
    """A wheel whose native library does not load is fixed by reinstalling it, not by installing it."""
    from edgetl.errors import BrokenBackendError, MissingBackendError, require

    package = tmp_path / "edgetl_broken_backend"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('libbackend.so: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BrokenBackendError) as broken:
        require("edgetl_broken_backend", "tflite", "TFLite conversion")
    assert broken.value.exit_code == 3 and "installed but does not import" in broken.value.message
    assert "libbackend.so" in broken.value.message and "--force-reinstall" in broken.value.hint
    with pytest.raises(MissingBackendError):
        require("edgetl_absent_backend", "tflite", "TFLite conversion")


def test_calibration_says_which_images_it_could_not_read(tmp_path, capsys):
    from edgetl.contract.preprocess import Preprocess
    from edgetl.data.folder import Sample
    from edgetl.export.calibration import load_calibration

    samples = []
    for number in range(10):
        path = tmp_path / "cat" / f"{number}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (16, 16), (number * 20, 0, 0)).save(path)
        samples.append(Sample(f"cat/{number}.png", "cat"))
    (tmp_path / "cat" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    calibration = load_calibration(tmp_path, samples, Preprocess(size=(8, 8)), 10, "folder [train]")
    assert len(calibration) == 9
    err = capsys.readouterr()
    assert "calibration skipped 1 unreadable or missing image(s) of folder [train], e.g. cat/3.png" in \
        " ".join((err.out + err.err).split())


def test_a_class_folder_whose_name_cannot_be_a_label_is_refused(tmp_path):
    """Class folder names become the artifact's labels: the same rule as a sidecar's, at the start."""
    for name in ("cat", "dog\x1b[2Jcow"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 90, 0, 0)).save(tmp_path / name / f"{i}.png")
    with pytest.raises(DatasetError) as caught:
        scan_image_folder(tmp_path)
    assert "class folder 'dog\\x1b[2Jcow'" in caught.value.message and "control" in caught.value.message
    (tmp_path / "dog\x1b[2Jcow").rename(tmp_path / "dog")
    assert scan_image_folder(tmp_path).classes == ["cat", "dog"]


def test_pick_leaves_out_a_parity_record_whose_drop_is_not_a_number(tmp_path):
    """A NaN drop compares False with every bound, so it would pass `--max-drop`; a string would crash."""
    from edgetl.deploy.pick import candidates

    for name, drop in (("nan", "NaN"), ("text", '"0.1"'), ("huge", "1e999"), ("good", "0.25")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.json").write_text("{}")
        (tmp_path / name / "parity.json").write_text('{"drop_pp": %s, "accuracy": 0.9}' % drop)
    chosen, left_out = candidates(tmp_path, max_drop=1.0)
    assert [p.name for p in chosen] == ["good"]
    assert sorted(x["artifact"] for x in left_out) == ["huge", "nan", "text"]
    assert all("no valid drop_pp" in x["reason"] for x in left_out), left_out


def test_a_tensorrt_engine_cache_shipped_inside_an_artifact_is_refused(tmp_path):
    """An engine is code for one GPU and TensorRT version: built on the device, never shipped."""
    from test_device_state import _tiny_artifact

    from edgetl.deploy.bundle import build_bundle
    from edgetl.deploy.profiles import get_profile

    artifact = _tiny_artifact(tmp_path / "artifact")
    (artifact / "trt_cache").mkdir()
    (artifact / "trt_cache" / "model.engine").write_bytes(b"not from this device")
    with pytest.raises(BadInputError, match="TensorRT engine cache inside the artifact"):
        build_bundle(artifact, get_profile("jetson-orin-nano"), tmp_path / "bundle", wheels=False)
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_transparent_images_are_composited_on_white_exactly(mode):
    """What PIL's alpha_composite onto opaque white gives, pixel for pixel, for every transparent mode."""
    rng = np.random.default_rng(3)
    rgba = Image.fromarray(rng.integers(0, 256, (40, 30, 4), dtype=np.uint8), "RGBA")
    source = rgba if mode == "RGBA" else rgba.convert("LA") if mode == "LA" else rgba.convert("PA")
    white = Image.new("RGBA", source.size, (255, 255, 255, 255))
    expected = np.asarray(Image.alpha_composite(white, source.convert("RGBA")).convert("RGB"))
    assert np.array_equal(np.asarray(to_rgb(source)), expected)
