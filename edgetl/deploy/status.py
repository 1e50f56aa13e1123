"""`edgetl status`: what a device's classifier is doing now, read from its heartbeat.

The service rewrites its heartbeat (runtime/status.py) about once a second; this reads it on the
device (over SSH, or on this machine) with the release `current` points at and the device's clock,
and says in one word how the device is: `running` (a fresh heartbeat from the current release),
`stale` (no new heartbeat for STALE_S: the service hangs, or stopped), `other release` (the service
still runs an older release: it was not restarted), `no heartbeat`, or `not installed`.

The heartbeat is read as untrusted text: size-capped, only known fields of the right types are kept,
and strings are cut to one printable line, so a crafted file cannot fake rows or flood the terminal.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor

from edgetl.deploy.health import device_time
from edgetl.deploy.local import current_release, resolve_root
from edgetl.deploy.service import heartbeat_path
from edgetl.deploy.state import release_profile
from edgetl.deploy.target import LocalTarget, SshTarget, connected
from edgetl.errors import EdgetlError

STALE_S = 10.0  # a heartbeat is rewritten every second while frames flow (and on start)
MAX_BYTES = 64 * 1024
NUMBERS = ("frames", "dropped", "unknown", "fps", "uptime_s", "time", "min_confidence", "pid")
TEXTS = ("release", "model", "source")


def _text(value, limit: int = 200) -> str | None:
    """One printable line of at most `limit` characters, or None for anything but a string."""
    if not isinstance(value, str):
        return None
    first = value.splitlines()[0] if value else ""
    return "".join(ch if ch.isprintable() else "?" for ch in first)[:limit]


def _number(value):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else None


def clean_heartbeat(text: str | None) -> dict | None:
    """The known fields of a heartbeat, each checked; None when it is missing or not a JSON object."""
    if not text or len(text) > MAX_BYTES:
        return None
    try:
        beat = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(beat, dict):
        return None
    out = {key: _number(beat.get(key)) for key in NUMBERS}
    out.update({key: _text(beat.get(key)) for key in TEXTS})
    latency = beat.get("infer_ms") if isinstance(beat.get("infer_ms"), dict) else {}
    out["infer_ms"] = {k: _number(latency.get(k)) for k in ("p50", "p99")} if latency else None
    error = beat.get("last_error") if isinstance(beat.get("last_error"), dict) else None
    out["last_error"] = _text(error.get("message"), 300) if error else None
    mqtt = beat.get("mqtt") if isinstance(beat.get("mqtt"), dict) else None
    if mqtt:
        out["mqtt"] = {"broker": _text(mqtt.get("broker")), "connected": mqtt.get("connected") is True,
                       **{k: _number(mqtt.get(k)) for k in ("published", "dropped", "queued")}}
    return out


def judge(beat: dict | None, current: str | None, now: float | None) -> str:
    """One word for the device: running, stale, other release, no heartbeat, not installed."""
    if current is None:
        return "not installed"
    if beat is None:
        return "no heartbeat"
    if beat.get("release") and beat["release"] != current:
        return "other release"
    if now is not None and beat.get("time") is not None and now - beat["time"] > STALE_S:
        return "stale"
    return "running"


def device_status(device, root: str, heartbeat: str | None = None) -> dict:
    """The status row of one device: its current release, its heartbeat's fields, their age, a verdict."""
    root = resolve_root(root, device)
    current = current_release(root, device)
    path = heartbeat or heartbeat_path(release_profile(device, root, current))
    beat = clean_heartbeat(device.read_text(path))
    now = device_time(device)
    age = round(now - beat["time"], 1) if beat and now is not None and beat.get("time") is not None else None
    return {"ok": True, "root": root, "current": current, "heartbeat": path, "state": judge(beat, current, now),
            "age_s": age, "beat": beat}


def status_of(target: LocalTarget | SshTarget, heartbeat: str | None = None) -> dict:
    """One target's row; a device that cannot be reached is a row that says why, never an exception."""
    try:
        with connected(target) as device:
            return {"device": target.name, **device_status(device, target.path, heartbeat)}
    except EdgetlError as exc:
        return {"device": target.name, "ok": False, "state": "unreachable", "error": " ".join(exc.message.split())}
    except Exception as exc:  # noqa: BLE001 - one device's failure is its row, never the fleet's
        return {"device": target.name, "ok": False, "state": "unreachable",
                "error": " ".join(f"{type(exc).__name__}: {exc}".split())}


def fleet_status(targets: list, heartbeat: str | None = None, parallel: int = 8) -> list[dict]:
    """Every target's row, in order, asked in parallel."""
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(targets)))) as pool:
        return list(pool.map(lambda target: status_of(target, heartbeat), targets))
