"""Where frames come from: a camera, a video file, a network stream, an image or a folder.

    0, 1, /dev/video0          a camera (V4L2 through OpenCV: USB webcams), live
    picamera2, picamera2:1     a Raspberry Pi Camera Module (libcamera through Picamera2), live
    "... ! appsink"            a GStreamer pipeline (Jetson CSI cameras), live
    rtsp://..., http(s)://...  a network stream, live
    clip.mp4                   a video file, every frame
    photo.jpg / photos/        images (EXIF-rotated, any mode), every one

Live sources may drop stale frames when inference is slower than the camera;
files never drop a frame. A source that cannot be opened is one clear line,
exit code 2. No torch.

Credentials in a stream URL (rtsp://user:pass@cam/...) are used to open it and
nowhere else: the description every sink, summary and error shows is redacted.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from edgetl.contract.images import UnreadableImageError, from_bgr_array, is_image_name, load_rgb
from edgetl.errors import BadInputError, require


@dataclass
class Frame:
    index: int
    name: str  # file name, or the source for video/camera
    ts: float  # capture time (epoch seconds)
    image: Image.Image  # RGB
    bgr: np.ndarray | None = None  # the original frame for overlays (video/camera)


class SourceError(BadInputError):
    """A camera, stream or file that cannot be opened or read."""


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s]*@")  # greedy: up to the authority's last @
_SECRET_PARAM = re.compile(r"(?i)(?<![A-Za-z0-9_-])(password|passwd|pwd|pass|user-pw|token|access_token|auth|"
                           r"key|apikey|api_key|secret|sig|signature)=([^&\s#;]+)")


def redact_url(text: str) -> str:
    """`rtsp://user:pass@cam/s?pwd=x` -> `rtsp://***@cam/s?pwd=***`: what may be shown of a stream URL.

    Also inside a GStreamer pipeline (`rtspsrc location=... user-pw=...`). Strings without
    `://` (files, cameras) come back unchanged, so a file named key=1.jpg keeps its name.
    """
    text = str(text)
    if "://" not in text:
        return text
    return _SECRET_PARAM.sub(r"\1=***", _USERINFO.sub(r"\1***@", text))


class Source:
    live = False
    description = ""

    def frames(self) -> Iterator[Frame]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class ImageSource(Source):
    def __init__(self, paths: list[Path], description: str):
        self.paths, self.description = paths, description

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            try:
                image = load_rgb(path)
            except UnreadableImageError as exc:
                from edgetl.console import warn

                warn(f"skipped {exc.message}")
                continue
            yield Frame(index, str(path), time.time(), image)


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480); one clear error otherwise."""
    width, sep, height = str(text).lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise BadInputError(f"camera size {text!r} is not WIDTHxHEIGHT", "pass e.g. --camera-size 640x480")
    return int(width), int(height)


class VideoSource(Source):
    def __init__(self, target, description: str, live: bool, size: tuple[int, int] | None = None,
                 fps: float | None = None, gstreamer: bool = False):
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # one clear line of ours, not OpenCV's probing
        cv2 = require("cv2", "device", "reading video and cameras")
        self.capture = None
        if gstreamer:
            self.capture = cv2.VideoCapture(target, cv2.CAP_GSTREAMER)
            if not self.capture.isOpened():
                built = re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()) is not None
                raise SourceError(f"cannot open GStreamer pipeline {description}",
                                  "check the pipeline with gst-launch-1.0" if built else
                                  "this OpenCV has no GStreamer support (pip's opencv wheels lack it): use the "
                                  "system's python3-opencv (JetPack ships one; the Jetson profile's venv sees it)")
        elif (not live or str(target).startswith(("rtsp", "http", "rtmp"))) and hasattr(cv2, "CAP_PROP_N_THREADS"):
            # One decoder thread: capture is already its own pipeline stage, and FFmpeg's
            # threaded decoding costs ~75% more CPU per frame, CPU that inference needs
            # (measured 1.16 against 0.67 ms for a 640x480 frame on 2 cores).
            self.capture = cv2.VideoCapture(target, cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, 1])
        if self.capture is None or not self.capture.isOpened():
            self.capture = cv2.VideoCapture(target)  # cameras (V4L2 backend), and OpenCVs without the property
        self.description, self.live = description, live
        if not self.capture.isOpened():
            kind = "camera" if live and not str(target).startswith(("rtsp", "http")) else "stream" if live else "video"
            hint = {"camera": "check the camera is connected and free (ls /dev/video*), or pass a video file",
                    "stream": "check the URL and that the stream is reachable from this machine",
                    "video": "check the file exists and is a video OpenCV can decode"}[kind]
            raise SourceError(f"cannot open {description if kind == 'camera' else f'{kind} {description}'}", hint)
        if size or fps:
            # Ask the camera for a mode near what the model needs: a 224 px model gains nothing
            # from 1080p, and every pixel costs decoding and resizing on the device's CPU.
            if size:
                self.capture.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
                self.capture.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
            if fps:
                self.capture.set(cv2.CAP_PROP_FPS, float(fps))
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or None
        # What the device actually delivers (a camera picks its nearest mode), for the summary.
        self.size = (int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def frames(self) -> Iterator[Frame]:
        index = 0
        while True:
            ok, frame = self.capture.read()
            if not ok:
                return
            yield Frame(index, self.description, time.time(), from_bgr_array(frame), frame)
            index += 1

    def close(self) -> None:
        self.capture.release()


def open_source(spec: str, camera_size: tuple[int, int] | None = None, camera_fps: float | None = None) -> Source:
    """`camera_size`/`camera_fps` request a capture mode from a camera; other sources refuse them."""
    spec = str(spec)
    if spec.isdigit():
        return VideoSource(int(spec), f"camera {spec}", live=True, size=camera_size, fps=camera_fps)
    if spec.startswith("/dev/video"):
        if not Path(spec).exists():
            raise SourceError(f"camera {spec} does not exist", "list cameras with: ls /dev/video*")
        return VideoSource(spec, spec, live=True, size=camera_size, fps=camera_fps)
    if spec == "picamera2" or spec.startswith("picamera2:"):  # CSI cameras on Raspberry Pi OS: see picamera.py
        number = spec.partition(":")[2] if ":" in spec else "0"
        if not re.fullmatch(r"[0-9]+", number):
            raise BadInputError(f"camera source {spec!r} is not picamera2 or picamera2:N",
                                "pass picamera2 (camera 0) or picamera2:N, N counted from 0 as in "
                                "`rpicam-hello --list-cameras`")
        from edgetl.runtime.picamera import Picamera2Source

        return Picamera2Source(int(number), camera_size, camera_fps)
    if " ! " in spec and "appsink" in spec:  # a GStreamer pipeline (Jetson CSI cameras: nvarguscamerasrc)
        if camera_size or camera_fps:
            raise BadInputError("--camera-size and --camera-fps do not apply to a GStreamer pipeline",
                                "set width, height and framerate in the pipeline's caps instead")
        return VideoSource(spec, redact_url(spec), live=True, gstreamer=True)
    if camera_size or camera_fps:
        raise BadInputError(f"--camera-size and --camera-fps apply to cameras, not to {redact_url(spec)}",
                            "drop them, or pass a camera (0, /dev/videoN, picamera2) as --source")
    if spec.startswith(("rtsp://", "http://", "https://", "rtmp://")):
        return VideoSource(spec, redact_url(spec), live=True)  # OpenCV gets the credentials, nothing else
    path = Path(spec).expanduser()
    if path.is_dir():
        images = sorted(p for p in path.rglob("*") if p.is_file() and is_image_name(p))
        if not images:
            raise SourceError(f"folder {path} holds no images", "pass a folder of .jpg/.png files or a video")
        return ImageSource(images, str(path))
    if not path.exists():
        raise SourceError(f"source {redact_url(spec)} does not exist",
                          "pass a camera (0, /dev/videoN, picamera2), a video or image file, a folder, or an rtsp:// URL")
    if is_image_name(path):
        return ImageSource([path], str(path))
    return VideoSource(str(path), str(path), live=False)
