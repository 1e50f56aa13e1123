"""The systemd unit that runs the camera classifier at boot, written for where it is installed.

The unit lives at ROOT/edgetl.service, beside `current`, because it is the same for every
release (it runs ROOT/current): `sudo systemctl link ROOT/edgetl.service` once, and every
deploy rewrites it for the root it installed to and restarts it. A bundle also carries a
copy rendered for its profile's `install_path`, for the offline procedure.

Every value is quoted for systemd, not for a shell: systemd splits ExecStart on blanks,
honours double quotes and C escapes, expands `%` specifiers and `$` variables. Paths and
user names are refused unless they are plain (what a unit can hold without surprises),
and the free-form camera source is quoted and escaped.
"""

from __future__ import annotations

import re

from edgetl.errors import BadInputError

SERVICE_NAME = "edgetl.service"
SERVE_PORT = 8080
TOKEN_FILE = "/var/lib/edgetl/serve-token"
"""The live page's secret: in the unit's StateDirectory, which systemd creates for the service user."""
HEARTBEAT_FILE = "/var/lib/edgetl/heartbeat.json"  # beside it (profiles.HEALTH_DEFAULTS)
ENV_FILE = "edgetl.env"
"""ROOT/edgetl.env (mode 0600): the service's secrets, e.g. EDGETL_SOURCE=rtsp://user:pass@cam/stream. The
unit reads it through EnvironmentFile=, so a password is in neither the world-readable unit file, the
bundle's manifest nor `ps` (a process's environment is readable by its owner and root only)."""
ENV_LINE = re.compile(r"^(?:[A-Z_][A-Z0-9_]{0,63}=[^\0]*|#.*|)$")
PLAIN_PATH = re.compile(r"^/(?:[A-Za-z0-9._+@-]+/?)*$")
PLAIN_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def plain_path(path: str, what: str = "install path") -> str:
    """An absolute path of plain characters, without `..`: safe in a unit, a script and a command."""
    path = str(path)
    if not PLAIN_PATH.fullmatch(path) or ".." in path.split("/") or len(path) > 1024:
        raise BadInputError(f"{what} {path!r} must be an absolute path of letters, digits and ._+@- only",
                            "choose a plain folder such as /opt/edgetl")
    return path.rstrip("/") or "/"


def systemd_quote(value: str) -> str:
    """One ExecStart argument, whatever it contains (spaces, quotes, %, $), or a refusal."""
    if any(c in value for c in "\n\r\0"):
        raise BadInputError(f"{value!r} cannot go into a systemd unit (it contains a line break or NUL)")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def _camera_flags(camera: dict) -> list[str]:
    """The profile's capture mode as `edgetl run` flags (numbers only, validated by the profile)."""
    flags = []
    if camera.get("width") and camera.get("height"):
        flags += ["--camera-size", f"{int(camera['width'])}x{int(camera['height'])}"]
    if camera.get("fps"):
        flags += ["--camera-fps", f"{float(camera['fps']):g}"]
    return flags


def _result_flags(results: dict) -> list[str]:
    """The profile's results settings as `edgetl run` flags (validated by the profile; quoted by the caller)."""
    flags = []
    if results.get("min_confidence") is not None:
        flags += ["--min-confidence", f"{float(results['min_confidence']):g}"]
    if results.get("mqtt"):
        flags += ["--mqtt", str(results["mqtt"])]
    return flags


def heartbeat_path(profile: dict) -> str:
    """Where the service writes its heartbeat (the profile's health.heartbeat), a plain absolute path."""
    return plain_path(str((profile.get("health") or {}).get("heartbeat", HEARTBEAT_FILE)), "health.heartbeat")


def read_env_file(path, what: str = "--camera-env") -> str:
    """A local environment file for the service: KEY=VALUE lines, readable by its owner only (it holds
    secrets); refused with one line otherwise."""
    import stat
    from pathlib import Path

    path = Path(path)
    try:
        mode, text = path.stat().st_mode, path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{what} {path} cannot be read: {exc}") from exc
    if stat.S_IMODE(mode) & 0o077:
        raise BadInputError(f"{what} {path} is readable by other users and holds secrets", f"chmod 600 {path}")
    bad = next((n for n, line in enumerate(text.splitlines(), 1) if not ENV_LINE.fullmatch(line)), None)
    if bad is not None:
        raise BadInputError(f"{what} {path}: line {bad} is not KEY=VALUE", "e.g. EDGETL_SOURCE=rtsp://user:pass@cam/s")
    return text


def env_sets_source(text: str | None) -> bool:
    return any(line.startswith("EDGETL_SOURCE=") for line in (text or "").splitlines())


def _pixel_limit(profile: dict) -> str:
    """The profile's image pixel limit for the service (a number: validated by the profile), or nothing."""
    pixels = profile.get("max_image_pixels")
    return f"\nEnvironment=EDGETL_MAX_IMAGE_PIXELS={int(pixels)}" if pixels else ""


def service_unit(profile: dict, root: str, source_in_env: bool = False) -> str:
    """The unit for a release installed under `root`, from the profile as the manifest records it.
    `source_in_env`: ROOT/edgetl.env sets EDGETL_SOURCE, which `edgetl run` reads when --source is absent."""
    root = plain_path(root)
    user = str(profile.get("service_user", "edgetl"))
    if not PLAIN_USER.fullmatch(user):
        raise BadInputError(f"service_user {user!r} is not a plain user name")
    camera = profile.get("camera") or {}
    source = [] if source_in_env else ["--source", str(camera.get("source", "0"))]
    command = [f"{root}/current/venv/bin/python", "-m", "edgetl", "run", f"{root}/current/model",
               *source, "--threads", str(int(profile.get("threads", 2))),
               *_camera_flags(camera), *_result_flags(profile.get("results") or {}), "--serve", str(SERVE_PORT), "--serve-host", "0.0.0.0",
               "--serve-token-file", TOKEN_FILE, "--heartbeat", heartbeat_path(profile), "--json-lines"]
    return f"""[Unit]
Description=edgetl camera classifier ({re.sub(r'[^A-Za-z0-9._ -]', '', str(profile.get('name', 'device')))})
After=network-online.target

[Service]
User={user}
# Cameras: /dev/video*, /dev/media* and the Pi's /dev/dma_heap belong to the video group.
SupplementaryGroups=video
WorkingDirectory={root}/current
# `python -m edgetl`, not the venv's console script: the release folder is renamed after install,
# and console scripts keep the old path in their shebang while the interpreter link does not.
# The live page listens on every interface, so it asks for the token the service creates (0600)
# in {TOKEN_FILE} on first start; the URL with the token is in `journalctl -u edgetl`.
StateDirectory=edgetl
StateDirectoryMode=0700
# Secrets (a camera URL with a password) come from this 0600 file, never from the command line.
EnvironmentFile=-{root}/{ENV_FILE}{_pixel_limit(profile)}
ExecStart={' '.join(systemd_quote(part) for part in command)}
Restart=on-failure
RestartSec=3

[Install]
WantedBy=multi-user.target
"""
