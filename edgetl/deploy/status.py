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

from edgetl.deploy.fleet import per_host
from edgetl.deploy.health import device_time
from edgetl.deploy.heartbeat import clean_heartbeat
from edgetl.deploy.local import current_release, resolve_root
from edgetl.deploy.service import heartbeat_path
from edgetl.deploy.state import release_profile
from edgetl.deploy.target import LocalTarget, SshTarget, connected

STALE_S = 10.0  # a heartbeat is rewritten every second while frames flow (and on start)
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
    """One target's row (its heartbeat judged), reached over its own connection."""
    with connected(target) as device:
        return {"device": target.name, **device_status(device, target.path, heartbeat)}


def fleet_status(targets: list, heartbeat: str | None = None, parallel: int = 8) -> list[dict]:
    """Every target's row, in order, asked in parallel; a device that cannot be reached is a row that says
    why, never an exception."""
    return per_host(targets, lambda target: status_of(target, heartbeat),
                    lambda target: {"device": target.name, "ok": False, "state": "unreachable"}, parallel)
