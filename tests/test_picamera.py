"""`--source picamera2`: a Raspberry Pi Camera Module through Picamera2, on a stand-in picamera2.

The real picamera2 needs libcamera and a camera, so the tests write a stand-in package with the same calls
(global_camera_info, Picamera2(index), create_video_configuration, configure, start, capture_array, stop,
close) answered the way the real library does: the configuration comes back filled in, and frames come in
the byte order the Picamera2 manual gives for each format (RGB888 is [B, G, R]), made from a real photo.
Everything of edgetl's runs for real: the source, the stream, the runtime, the CLI. test_aarch64.py puts the
same stand-in into an arm64 userland's system site-packages to test the Pi bundle's install.sh.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import artifact, run_cli
from edgetl.errors import BadInputError
from edgetl.runtime.sources import SourceError, open_source

STANDIN = '''"""A stand-in for Raspberry Pi's picamera2 (python3-picamera2), written by edgetl's tests/test_picamera.py:
the calls edgetl makes, answered as the real library answers them, with a real photo as the picture."""
import json
import os
import time

import numpy as np  # the real picamera2 imports numpy (and PIL, libcamera, simplejpeg ...) at import time
import prctl  # a system-only dependency, as the real one's outputs/ffmpegoutput.py imports python3-prctl

PHOTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "photo.npy")  # RGB, uint8
# The Picamera2 manual: RGB888 pixels are [B, G, R], BGR888 [R, G, B], XBGR8888 [R, G, B, 255], XRGB8888 [B, G, R, 255].
ORDER = {"RGB888": [2, 1, 0], "BGR888": [0, 1, 2], "XRGB8888": [2, 1, 0, 3], "XBGR8888": [0, 1, 2, 3]}


def log(event, **fields):
    if os.environ.get("EDGETL_STANDIN_LOG"):
        with open(os.environ["EDGETL_STANDIN_LOG"], "a") as out:
            out.write(json.dumps({"event": event, **fields}) + "\\n")


def frame_rgb(size):
    """The photo at `size` (width, height), nearest neighbour: what the camera shows, as RGB."""
    photo = np.load(PHOTO)
    rows = np.arange(size[1]) * photo.shape[0] // size[1]
    cols = np.arange(size[0]) * photo.shape[1] // size[0]
    return photo[rows][:, cols]


class Picamera2:
    @staticmethod
    def global_camera_info():
        count = int(os.environ.get("EDGETL_STANDIN_CAMERAS", "2"))
        return [{"Model": "imx708", "Location": 2, "Rotation": 180, "Num": i,
                 "Id": "/base/axi/pcie@120000/rp1/i2c@%d/imx708@1a" % (88000 - 8000 * i)} for i in range(count)]

    def __init__(self, camera_num=0):
        if os.environ.get("EDGETL_STANDIN_BUSY"):
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        self.global_camera_info()[camera_num]  # IndexError for a camera that is not there, as the real one
        self.camera_num, self.started, self.camera_config = camera_num, False, None
        log("open", index=camera_num)

    def create_video_configuration(self, main={}, controls={}, **_):
        main = {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True, **main}
        return {"use_case": "video", "main": main, "lores": None, "raw": None, "buffer_count": 6,
                "controls": {"NoiseReductionMode": 1, "FrameDurationLimits": (33333, 33333), **controls}}

    def configure(self, config):
        main = config["main"]  # filled in with what "libcamera" granted, as the real configure does
        main["format"] = os.environ.get("EDGETL_STANDIN_FORMAT") or main["format"]
        main["size"] = tuple(main["size"])
        main["stride"] = main["size"][0] * (4 if main["format"].startswith("X") else 3)
        self.camera_config = config
        log("configure", format=main["format"], size=list(main["size"]), controls=config["controls"])

    def start(self):
        self.started = True
        log("start")

    def capture_array(self, name="main"):
        if not self.started:
            raise RuntimeError("Camera must be started before capturing")
        time.sleep(1 / 30)
        main = self.camera_config[name]
        rgb = frame_rgb(main["size"])
        if main["format"].startswith("X"):
            rgb = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
        return np.ascontiguousarray(rgb[..., ORDER[main["format"]]])

    def stop(self):
        self.started = False
        log("stop")

    def close(self):
        log("close")
'''

PRCTL = '''"""A stand-in for python3-prctl: a module only the system has, which picamera2 imports."""


def set_name(name):
    return None
'''


def write_standin(folder: Path) -> Path:
    """The stand-in picamera2 package, with its photo (skimage's chelsea) and its system-only dependency
    (prctl), in `folder`: a site-packages of its own."""
    from skimage import data

    package = folder / "picamera2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(STANDIN)
    np.save(package / "photo.npy", data.chelsea())
    (folder / "prctl.py").write_text(PRCTL)
    return folder


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """The stand-in importable here (and, through PYTHONPATH, in a CLI subprocess), logging every call."""
    folder = write_standin(tmp_path / "site")
    log = tmp_path / "camera.jsonl"
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("EDGETL_STANDIN_LOG", str(log))
    names = ("picamera2", "prctl")
    for name in names:
        sys.modules.pop(name, None)

    def events() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []

    yield SimpleNamespace(folder=folder, log=log, events=events)
    for name in names:
        sys.modules.pop(name, None)


def _take(source, count: int) -> list:
    frames = []
    for frame in source.frames():
        frames.append(frame)
        if len(frames) == count:
            break
    return frames


def test_picamera2_sources_reach_the_camera_asked_for_in_the_mode_asked_for(standin):
    picamera2 = importlib.import_module("picamera2")
    source = open_source("picamera2")
    try:
        assert (source.description, source.live, source.size, source.fps) == ("picamera2 camera 0", True, (640, 480),
                                                                              30.0)  # Picamera2's video default
        frames = _take(source, 2)
    finally:
        source.close()
    source.close()  # idempotent: the stream closes its source, then the caller does
    assert [e["event"] for e in standin.events()] == ["open", "configure", "start", "stop", "close"]
    configured = standin.events()[1]
    assert configured["format"] == "RGB888" and configured["size"] == [640, 480]
    assert "FrameRate" not in configured["controls"]
    expected = picamera2.frame_rgb((640, 480))
    assert [f.index for f in frames] == [0, 1] and all(f.name == "picamera2 camera 0" for f in frames)
    for frame in frames:  # RGB888 arrives as B,G,R bytes: the image is RGB, the overlay copy BGR
        assert frame.image.mode == "RGB" and frame.image.size == (640, 480)
        assert np.array_equal(np.asarray(frame.image), expected)
        assert np.array_equal(frame.bgr, expected[..., ::-1])
    red, _, blue = np.asarray(frames[0].image, dtype=float).reshape(-1, 3).mean(axis=0)
    assert red > blue + 20  # an orange cat: R and B swapped would make it blue

    second = open_source("picamera2:1", camera_size=(320, 240), camera_fps=15)
    try:
        assert (second.description, second.size, second.fps) == ("picamera2 camera 1", (320, 240), 15.0)
        frame = _take(second, 1)[0]
    finally:
        second.close()
    opened, configured = standin.events()[5:7]
    assert opened == {"event": "open", "index": 1}
    assert configured["size"] == [320, 240] and configured["controls"]["FrameRate"] == 15.0
    assert frame.image.size == (320, 240)
    assert np.array_equal(np.asarray(frame.image), picamera2.frame_rgb((320, 240)))


@pytest.mark.parametrize("granted", ["XBGR8888", "XRGB8888", "BGR888"])
def test_frames_are_rgb_whatever_format_libcamera_grants(standin, monkeypatch, granted):
    """Four-channel XBGR8888 ([R, G, B, 255]) and XRGB8888 ([B, G, R, 255]), and BGR888 ([R, G, B])."""
    monkeypatch.setenv("EDGETL_STANDIN_FORMAT", granted)
    source = open_source("picamera2", camera_size=(160, 120))
    try:
        frame = _take(source, 1)[0]
    finally:
        source.close()
    expected = importlib.import_module("picamera2").frame_rgb((160, 120))
    assert np.array_equal(np.asarray(frame.image), expected)
    assert frame.bgr.shape == (120, 160, 3) and frame.bgr.flags.c_contiguous
    assert np.array_equal(frame.bgr, expected[..., ::-1])


def test_cameras_that_cannot_be_had_are_one_clear_error(standin, monkeypatch):
    monkeypatch.setenv("EDGETL_STANDIN_CAMERAS", "0")
    with pytest.raises(SourceError) as none:
        open_source("picamera2")
    assert "found no camera" in none.value.message and "ribbon cable" in none.value.hint
    assert "rpicam-hello --list-cameras" in none.value.hint
    monkeypatch.setenv("EDGETL_STANDIN_CAMERAS", "2")
    with pytest.raises(SourceError, match="found 2 cameras, so there is no picamera2 camera 2"):
        open_source("picamera2:2")
    monkeypatch.setenv("EDGETL_STANDIN_BUSY", "1")
    with pytest.raises(SourceError) as busy:
        open_source("picamera2")
    assert "Device or resource busy" in busy.value.message and "another process holds the camera" in busy.value.hint
    for spec in ("picamera2:x", "picamera2:", "picamera2:-1", "picamera2:1.5", "picamera2:²"):
        with pytest.raises(BadInputError, match="is not picamera2 or picamera2:N"):
            open_source(spec)


def test_missing_or_broken_picamera2_is_one_clear_error(tmp_path, monkeypatch):
    assert importlib.util.find_spec("picamera2") is None  # this machine has none, as a Pi without the package
    with pytest.raises(SourceError) as missing:
        open_source("picamera2")
    assert "python3-picamera2" in missing.value.message
    assert "sudo apt install python3-picamera2" in missing.value.hint
    assert "--source 0" in missing.value.hint
    # Installed but broken: a system extension built for numpy 1.x under numpy 2 (python3-simplejpeg's
    # error, as Picamera2's users report it), and a picamera2 whose libcamera bindings are missing.
    abi = ('raise ValueError("numpy.dtype size changed, may indicate binary incompatibility. Expected 96 from C '
           'header, got 88 from PyObject")')
    for number, (body, said) in enumerate(((abi, "numpy.dtype size changed"),
                                           ("import libcamera", "No module named 'libcamera'"))):
        folder = tmp_path / f"broken-{number}"
        (folder / "picamera2").mkdir(parents=True)
        (folder / "picamera2" / "__init__.py").write_text(body + "\n")
        monkeypatch.syspath_prepend(str(folder))
        sys.modules.pop("picamera2", None)
        try:
            with pytest.raises(SourceError) as broken:
                open_source("picamera2")
        finally:
            sys.modules.pop("picamera2", None)
            sys.path.remove(str(folder))
        assert "installed but cannot be imported" in broken.value.message and said in broken.value.message


def test_classify_source_runs_the_pipeline_on_the_camera_module(exported, standin):
    from edgetl.runtime.app import classify_source

    model = artifact(exported, "tflite", "int8")["path"]  # what the Pi profiles run
    summary = classify_source(model, "picamera2", max_frames=5)
    assert summary["frames"] == 5 and summary["source"] == "picamera2 camera 0" and summary["live"] is True
    assert summary["frame_size"] == [640, 480]
    assert [e["event"] for e in standin.events()][-2:] == ["stop", "close"]
    assert [e["event"] for e in standin.events()].count("close") == 1


def test_edgetl_run_on_the_camera_module_and_without_picamera2(exported, standin, tmp_path):
    model = artifact(exported, "tflite", "int8")["path"]
    result = run_cli("run", model, "--source", "picamera2:1", "--camera-size", "320x240", "--camera-fps", "15",
                     "--max-frames", "3", "--json-lines", env={"PYTHONPATH": str(standin.folder)}, check=True)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    frames, summary = lines[:-1], lines[-1]["summary"]
    assert len(frames) == 3 and all(f["source"] == "picamera2 camera 1" for f in frames)
    assert summary["frames"] == 3 and summary["frame_size"] == [320, 240]
    assert standin.events()[0] == {"event": "open", "index": 1}
    assert standin.events()[1]["controls"]["FrameRate"] == 15.0

    empty = tmp_path / "no-picamera2"
    empty.mkdir()
    missing = run_cli("run", model, "--source", "picamera2", env={"PYTHONPATH": str(empty)})
    errors = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr
    assert len(errors) == 1 and "python3-picamera2" in errors[0], missing.stderr
    bad = run_cli("run", model, "--source", "picamera2:x")
    assert bad.returncode == 2 and "is not picamera2 or picamera2:N" in bad.stderr
