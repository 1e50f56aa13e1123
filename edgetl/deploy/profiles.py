"""Device profiles: one YAML file per target in `devices/`, read into a validated `DeviceProfile`.

A profile says what a device is (architecture, Python, wheel platform tags), what
it should run (preferred format and precision, then fallbacks), with which runtime
package and settings (threads, execution device), which version limits its bundled wheels
need (`wheel_constraints`: numpy<2 for the Pi's system Picamera2), how its camera is opened,
and where and as whom edgetl is installed. Deploy reads nothing else about a device, so
adding a device is adding a file (`$EDGETL_DEVICES_PATH` adds folders of your own).
Validation errors name the file and the field. No torch.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from edgetl.contract.fields import Fields
from edgetl.contract.formats import FORMATS, PRECISIONS
from edgetl.errors import BadInputError
from edgetl.recipe_folders import SHIPPED as SHIPPED_RECIPES, RecipeFolders

ARCHES = ("aarch64", "x86_64", "armv7l")

CAMERA_PIPELINES = ("v4l2", "libcamera", "gstreamer")
HEALTH_DEFAULTS = {"window_s": 120, "min_frames": 10, "heartbeat": "/var/lib/edgetl/heartbeat.json"}
"""After a switch and restart, the release counts as good once the service's heartbeat shows `min_frames`
classified frames of the new model within `window_s` with no restart in between. 120 s: a Pi 4 imports its
runtime, loads the model and opens the camera in 10-30 s, and a camera that needs a moment to settle
still fits; greenboot waits 150 s. Ten frames: capture, preprocessing and inference have worked over and
over, not once. The heartbeat lives in the unit's StateDirectory, where the service user may write."""


@dataclass(frozen=True)
class Target:
    format: str
    precision: str


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    arch: str
    python: str
    glibc: str
    platform_tags: tuple[str, ...]
    preferred: Target
    fallbacks: tuple[Target, ...]
    runtime: dict
    threads: int
    execution_device: str
    camera: dict
    install_path: str
    service_user: str
    tensorrt: dict = field(default_factory=dict)
    health: dict = field(default_factory=lambda: dict(HEALTH_DEFAULTS))
    max_image_pixels: int | None = None  # the service's decompression-bomb limit (EDGETL_MAX_IMAGE_PIXELS)
    wheel_constraints: tuple[str, ...] = ()  # pip constraints for the bundle's wheels, e.g. "numpy<2"
    results: dict = field(default_factory=dict)  # the service's min_confidence and mqtt URL (`edgetl run` flags)
    source_file: str = ""

    @property
    def targets(self) -> tuple[Target, ...]:
        """Preferred first, then the fallbacks: what deploy tries to ship, in order."""
        return (self.preferred, *self.fallbacks)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["platform_tags"] = list(self.platform_tags)
        data["wheel_constraints"] = list(self.wheel_constraints)
        data["targets"] = [asdict(t) for t in self.targets]
        return data


def wheel_platforms(arch: str, glibc: str) -> list[str]:
    """Every wheel platform tag a device with this glibc accepts, newest first.

    `pip download --platform` does not expand a manylinux tag to older compatible ones
    (ai-edge-litert 2.3.0's aarch64 wheel is manylinux_2_27), so the whole range is listed.
    """
    minor = int(glibc.split(".")[1])
    tags = [f"manylinux_2_{m}_{arch}" for m in range(minor, 16, -1)]
    if arch in ("x86_64", "aarch64"):
        tags.append(f"manylinux2014_{arch}")
    if arch == "armv7l":
        tags = [t for t in tags if int(t.split("_")[2]) >= 17]
    return [*tags, f"linux_{arch}"]


def _fail(path: Path, name: str, problem: str):
    Fields(f"device profile {path}", "see devices/rpi5.yaml for a complete example").fail(name, problem)


def _target(path: Path, where: str, value) -> Target:
    if not isinstance(value, dict):
        _fail(path, where, "must be a mapping with format and precision")
    fmt, precision = value.get("format"), value.get("precision")
    if fmt not in FORMATS:
        _fail(path, f"{where}.format", f"is {fmt!r}, not one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        _fail(path, f"{where}.precision", f"is {precision!r}, not one of {', '.join(PRECISIONS)}")
    return Target(fmt, precision)


def parse_profile(path: Path) -> DeviceProfile:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BadInputError(f"device profile {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise BadInputError(f"device profile {path} must be a YAML mapping")
    for required in ("name", "arch", "python", "glibc", "format", "precision", "runtime", "install_path"):
        if required not in data:
            _fail(path, required, "is required")
    if data["name"] != path.stem:
        _fail(path, "name", f"must match the file name '{path.stem}'")
    if data["arch"] not in ARCHES:
        _fail(path, "arch", f"is {data['arch']!r}, not one of {', '.join(ARCHES)}")
    python = str(data["python"])
    if not (python.count(".") == 1 and all(p.isdigit() for p in python.split("."))):
        _fail(path, "python", f"must look like 3.11, got {python!r}")
    glibc = str(data["glibc"])
    if not (glibc.count(".") == 1 and all(p.isdigit() for p in glibc.split(".")) and glibc.startswith("2.")):
        _fail(path, "glibc", f"must be the device's glibc version like 2.36, got {glibc!r}")
    tags = data.get("platform_tags") or wheel_platforms(data["arch"], glibc)
    if not (isinstance(tags, list) and all(isinstance(t, str) and data["arch"] in t for t in tags)):
        _fail(path, "platform_tags", f"must list wheel platform tags for {data['arch']}")
    runtime = data["runtime"]
    if not (isinstance(runtime, dict) and runtime.get("package")):
        _fail(path, "runtime", "must name the runtime package (runtime: {package: ..., version: ...})")
    threads = data.get("threads", 2)
    if not (isinstance(threads, int) and threads >= 1):
        _fail(path, "threads", f"must be a positive integer, got {threads!r}")
    camera = data.get("camera", {"pipeline": "v4l2", "source": "0"})
    if not isinstance(camera, dict) or camera.get("pipeline") not in CAMERA_PIPELINES:
        _fail(path, "camera.pipeline", f"must be one of {', '.join(CAMERA_PIPELINES)}")
    for key in ("width", "height", "fps"):
        value = camera.get(key)
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
            _fail(path, f"camera.{key}", f"must be a positive number, got {value!r}")
    if ("width" in camera) != ("height" in camera):
        _fail(path, "camera.width", "camera.width and camera.height go together")
    install_path = str(data["install_path"])
    if not install_path.startswith("/"):
        _fail(path, "install_path", f"must be an absolute path, got {install_path!r}")
    fallbacks = data.get("fallbacks", [])
    if not isinstance(fallbacks, list):
        _fail(path, "fallbacks", "must be a list of {format, precision}")
    return DeviceProfile(
        name=data["name"], description=str(data.get("description", data["name"])), arch=data["arch"],
        python=python, glibc=glibc, platform_tags=tuple(tags),
        preferred=_target(path, "format/precision", {"format": data["format"], "precision": data["precision"]}),
        fallbacks=tuple(_target(path, f"fallbacks[{i}]", f) for i, f in enumerate(fallbacks)),
        runtime=dict(runtime), threads=threads, execution_device=str(data.get("execution_device", "cpu")),
        camera=dict(camera), install_path=install_path, service_user=str(data.get("service_user", "edgetl")),
        tensorrt=_tensorrt(path, data.get("tensorrt")), health=_health(path, data.get("health")),
        max_image_pixels=_pixels(path, data.get("max_image_pixels")),
        wheel_constraints=_constraints(path, data.get("wheel_constraints")), results=_results(path, data.get("results")),
        source_file=str(path),
    )


def _results(path: Path, data) -> dict:
    """`results: {min_confidence: 0.6, mqtt: mqtt://broker.lan/edgetl/pi}`: what the service reports and where.
    A URL with credentials is refused (they would sit in the bundle and the unit): they belong in --camera-env."""
    from edgetl.runtime.mqtt import parse_mqtt_url

    if data is None:
        return {}
    if not isinstance(data, dict) or set(data) - {"min_confidence", "mqtt"}:
        _fail(path, "results", "must be a mapping of min_confidence and mqtt")
    confidence = data.get("min_confidence")
    if confidence is not None and not (isinstance(confidence, (int, float)) and not isinstance(confidence, bool)
                                       and 0 <= confidence <= 1):
        _fail(path, "results.min_confidence", f"must be a probability from 0 to 1, got {confidence!r}")
    if data.get("mqtt") is not None:
        try:
            parse_mqtt_url(str(data["mqtt"]))
        except BadInputError as exc:
            _fail(path, "results.mqtt", exc.message)
    return dict(data)


_CLAUSE = r" *(?:===|==|!=|<=|>=|~=|<|>) *[A-Za-z0-9.*+!_-]+ *"  # spaces, never a line break
CONSTRAINT = re.compile(rf"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?{_CLAUSE}(?:,{_CLAUSE})*")


def _constraints(path: Path, value) -> tuple[str, ...]:
    """Version limits on the bundle's wheels (`pip download -c`), for what the device's own system packages
    need: the Pi's python3-picamera2 extensions are built for bookworm's numpy 1.x, so its bundles need numpy<2.
    Each is a package name and version clauses, nothing else: the list becomes a constraints file, where a
    line like `--index-url ...` would be an option to pip."""
    if value is None:
        return ()
    if not (isinstance(value, list) and all(isinstance(v, str) and CONSTRAINT.fullmatch(v.strip()) for v in value)):
        _fail(path, "wheel_constraints", f"must be a list of package version limits like \"numpy<2\", got {value!r}")
    return tuple(v.strip() for v in value)


def _pixels(path: Path, value) -> int | None:
    """An image pixel limit sized for the device's memory (decoding plus compositing an RGBA image takes about
    8 bytes a pixel): 16 MP is ~130 MB, where the default 64 MP would be ~0.5 GB on a 1 GB board."""
    if value is None:
        return None
    if not (isinstance(value, int) and not isinstance(value, bool) and (1 << 16) <= value <= (1 << 30)):
        _fail(path, "max_image_pixels", f"must be an integer from 65536 to 2**30, got {value!r}")
    return value


def _health(path: Path, data) -> dict:
    """The health window (HEALTH_DEFAULTS, each key overridable)."""
    if data is None:
        return dict(HEALTH_DEFAULTS)
    if not isinstance(data, dict) or set(data) - set(HEALTH_DEFAULTS):
        _fail(path, "health", f"must be a mapping of {', '.join(HEALTH_DEFAULTS)}")
    health = {**HEALTH_DEFAULTS, **data}
    for key in ("window_s", "min_frames"):
        value = health[key]
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 3600):
            _fail(path, f"health.{key}", f"must be a positive number of at most 3600, got {value!r}")
    if not (isinstance(health["heartbeat"], str) and health["heartbeat"].startswith("/")):
        _fail(path, "health.heartbeat", "must be an absolute path on the device")
    return health


ENGINE_CACHE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def _tensorrt(path: Path, data) -> dict:
    """The TensorRT block: `build` a command template, `engine_cache` one folder name inside the release's
    model folder (a `../..` would put the engine, and TensorRT's reads, anywhere on the device)."""
    if not data:
        return {}
    if not isinstance(data, dict):
        _fail(path, "tensorrt", "must be a mapping with build and engine_cache")
    if not isinstance(data.get("build"), str) or "{model}" not in data["build"]:
        _fail(path, "tensorrt.build", "must be a command template containing {model} (and {engine})")
    cache = data.get("engine_cache", "trt_cache")
    if not isinstance(cache, str) or not ENGINE_CACHE_NAME.fullmatch(cache):
        _fail(path, "tensorrt.engine_cache", f"must be one folder name (letters, digits, - and _), got {cache!r}")
    return dict(data)


SHIPPED = SHIPPED_RECIPES / "devices"
PROFILES = RecipeFolders(kind="device profile", env_var="EDGETL_DEVICES_PATH", shipped=SHIPPED,
                         list_command="edgetl devices list", add_hint="add one as devices/NAME.yaml")


def list_profiles() -> list[str]:
    return PROFILES.names()


def get_profile(name: str) -> DeviceProfile:
    return parse_profile(PROFILES.path(name))
