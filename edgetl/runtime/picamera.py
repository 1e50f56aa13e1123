"""A Raspberry Pi Camera Module through Picamera2: `--source picamera2` (camera 0) or `picamera2:N`.

Why a source of its own: on Raspberry Pi OS bookworm a CSI Camera Module is driven by libcamera, and
cv2.VideoCapture(0) (V4L2) gets no frames from it. The supported Python interface is Picamera2, the
system package python3-picamera2: it binds the system's libcamera, so it is no pip wheel that works
alone. The Pi bundle's install.sh makes the system's copy importable in the release venv without
letting the system's numpy or Pillow shadow the bundled wheels (deploy/install_script.py). USB webcams
keep working through V4L2 (`--source 0`).

picamera2 is imported only when this source is opened, so the rest of the runtime runs where it is
absent, and its absence is one clear line (exit 2). No torch.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

import numpy as np

from edgetl.contract.images import from_bgr_array
from edgetl.errors import first_line
from edgetl.runtime.sources import Frame, Source, SourceError

INSTALL_HINT = "sudo apt install python3-picamera2 (Raspberry Pi OS); a USB webcam works with --source 0"
BUSY_HINT = "another process holds the camera (stop edgetl.service or rpicam apps)"
CABLE_HINT = ("check the ribbon cable (seated at both ends, contacts the right way round); "
              "`rpicam-hello --list-cameras` lists the cameras libcamera sees")
DEFAULT_SIZE = (640, 480)  # the capture mode the Pi profiles ask for: plenty for a 224 px model
# The Picamera2 manual (section "Image formats"): "RGB888 - 24 bits per pixel, ordered [B, G, R]" and
# "BGR888 - as above, but ordered [R, G, B]"; "XBGR8888 - ... a pixel would look like [R, G, B, 255]",
# "XRGB8888 - ... [B, G, R, 255]" (the names follow DRM's little-endian words, hence the reversal).
# picamera2's own code agrees: request.py turns RGB888 into PIL's raw mode "BGR", XBGR8888 into "RGBX".
# So RGB888 arrays are what OpenCV calls BGR: the same layout as a cv2.VideoCapture frame.
FORMAT = "RGB888"
TO_BGR = {"RGB888": slice(None), "BGR888": slice(None, None, -1),  # the channels, per format, that give B,G,R
          "XRGB8888": slice(0, 3), "XBGR8888": slice(2, None, -1)}


def import_picamera2():
    """The Picamera2 class, or one SourceError saying why not: not installed, or installed but broken
    (a system extension built against another numpy, a libcamera that does not load)."""
    try:
        from picamera2 import Picamera2
    except ModuleNotFoundError as exc:
        if exc.name != "picamera2":
            raise SourceError(f"Picamera2 is installed but cannot be imported: {first_line(exc)}",
                              "sudo apt install --reinstall python3-picamera2 python3-libcamera") from None
        raise SourceError("Picamera2 is not installed (the system package python3-picamera2): the Camera Module "
                          "source needs it", INSTALL_HINT) from None
    except Exception as exc:  # e.g. "numpy.dtype size changed" from python3-simplejpeg under a numpy 2
        raise SourceError(f"Picamera2 is installed but cannot be imported ({type(exc).__name__}: {first_line(exc)})",
                          "its system extensions are built for bookworm's numpy 1.x: this environment needs "
                          "numpy<2 (the Pi bundles pin it); a USB webcam works with --source 0") from None
    return Picamera2


class Picamera2Source(Source):
    """Camera `index` in Picamera2's numbering (rpicam-hello --list-cameras), in the capture mode asked."""

    live = True

    def __init__(self, index: int = 0, size: tuple[int, int] | None = None, fps: float | None = None):
        Picamera2 = import_picamera2()
        self.index, self.description, self.camera = index, f"picamera2 camera {index}", None
        try:
            cameras = Picamera2.global_camera_info()
        except Exception as exc:
            raise SourceError(f"Picamera2 cannot list the cameras: {first_line(exc)}", CABLE_HINT) from None
        if len(cameras) <= index:
            found = "no camera" if not cameras else f"{len(cameras)} camera{'s' if len(cameras) > 1 else ''}"
            raise SourceError(f"Picamera2 found {found}, so there is no {self.description}", CABLE_HINT)
        try:
            self.camera = Picamera2(index)
            controls = {"FrameRate": float(fps)} if fps else {}
            main = {"size": tuple(size or DEFAULT_SIZE), "format": FORMAT}
            config = self.camera.create_video_configuration(main=main, controls=controls)
            self.camera.configure(config)  # fills in what libcamera granted: size, format, stride
            self.camera.start()
        except Exception as exc:
            self.close()
            raise SourceError(f"cannot open {self.description}: {first_line(exc)}", BUSY_HINT) from None
        main = (getattr(self.camera, "camera_config", None) or config)["main"]
        self.format = str(main.get("format", FORMAT))
        if self.format not in TO_BGR:  # libcamera adjusted the request (a USB webcam gives YUYV or MJPEG)
            self.close()
            raise SourceError(f"{self.description} delivers {self.format} frames, not RGB",
                              "a USB webcam works through V4L2: --source 0")
        self.size = tuple(int(v) for v in main.get("size") or size or DEFAULT_SIZE)
        self.fps = float(fps) if fps else _fps(config.get("controls") or {})

    def frames(self) -> Iterator[Frame]:
        index, order = 0, TO_BGR[self.format]
        while self.camera is not None:
            camera = self.camera
            try:
                array = camera.capture_array("main")
            except Exception as exc:
                if self.camera is None:  # closed while a capture waited: the stream is over
                    return
                raise SourceError(f"{self.description} stopped delivering frames: {first_line(exc)}",
                                  BUSY_HINT) from None
            bgr = array if self.format == FORMAT else np.ascontiguousarray(array[..., order])
            yield Frame(index, self.description, time.time(), from_bgr_array(bgr), bgr)
            index += 1

    def close(self) -> None:
        """Stop and release the camera, once: a second close (the stream's, then the caller's) does nothing,
        and a camera that fails to stop is still closed, so the next process can open it."""
        camera, self.camera = self.camera, None
        if camera is None:
            return
        with contextlib.suppress(Exception):
            camera.stop()
        with contextlib.suppress(Exception):
            camera.close()


def _fps(controls: dict) -> float | None:
    """The frame rate a configuration asks for: Picamera2's video configuration sets FrameDurationLimits
    (33333 us: 30 fps) when no FrameRate is given."""
    if controls.get("FrameRate"):
        return float(controls["FrameRate"])
    limits = controls.get("FrameDurationLimits")
    return round(1e6 / limits[0], 2) if limits and limits[0] else None
