"""Is the release that was just switched to really serving? The service restart and the health window.

A self-test proves a release can classify its golden samples; it does not prove the service runs it on
the device's camera. After the switch and restart, the release counts as good only when the service's
heartbeat (`edgetl run --heartbeat`, written by sinks.HeartbeatSink) shows, within the profile's
`health.window_s`:

- the new release's model (`.../releases/<id>/model`, resolved by the service itself), not the old one;
- at least `health.min_frames` frames classified, written after the restart (device clock);
- no restart of the unit in between (`systemctl show -p NRestarts`): a crash loop is not health.

Anything else by the end of the window (no heartbeat, the old model, too few frames, restarts) is a
failure with the last reason seen; the caller switches back and records the release bad.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from edgetl.deploy.heartbeat import clean_heartbeat
from edgetl.deploy.profiles import HEALTH_DEFAULTS
from edgetl.deploy.service import SERVICE_NAME, heartbeat_path

POLL_S = 1.0


def device_time(device) -> float | None:
    """The device's clock (seconds since the epoch), which its heartbeat's times are in."""
    result = device.run(["date", "+%s"])
    text = result.stdout.strip()
    return float(text) if result.returncode == 0 and text.isdigit() else None


def restart_count(device) -> int | None:
    result = device.run(["systemctl", "show", "-p", "NRestarts", "--value", SERVICE_NAME], timeout=30)
    text = result.stdout.strip()
    return int(text) if result.returncode == 0 and text.isdigit() else None


def judge(beat: dict | None, release: str, since: float | None, min_frames: int) -> str | None:
    """Why `beat` does not show the release healthy, or None when it does."""
    if beat is None:
        return "the service wrote no heartbeat"
    model, frames, stamp = beat.get("model"), beat.get("frames"), beat.get("time")
    if not isinstance(model, str) or not model.rstrip("/").endswith(f"/releases/{release}/model"):
        return f"the service runs another model ({str(model)[:200]})"
    if since is not None and not (isinstance(stamp, (int, float)) and stamp >= since - 1):
        return "the service's heartbeat is older than the restart"
    if not (isinstance(frames, int) and frames >= min_frames):
        return f"the service classified {frames if isinstance(frames, int) else 0} of {min_frames} frames"
    return None


def wait_healthy(device, release: str, profile: dict, since: float | None, restarts: int | None) -> dict:
    """Poll the heartbeat until the release is healthy or the window ends: {"healthy", "reason", "seconds"}."""
    health = {**HEALTH_DEFAULTS, **(profile.get("health") or {})}
    path, window, min_frames = heartbeat_path(profile), float(health["window_s"]), int(health["min_frames"])
    started = time.monotonic()
    while True:
        reason = judge(clean_heartbeat(device.read_text(path)), release, since, min_frames)
        now = restart_count(device)
        if restarts is not None and now is not None and now > restarts:
            reason = f"the service restarted {now - restarts} time(s) (a crash loop)"
            return {"healthy": False, "reason": reason, "seconds": round(time.monotonic() - started, 1)}
        if reason is None:
            return {"healthy": True, "reason": None, "seconds": round(time.monotonic() - started, 1)}
        if time.monotonic() - started >= window:
            return {"healthy": False, "reason": reason, "seconds": round(window, 1)}
        time.sleep(POLL_S)


def restart_service(device) -> str:
    """Restart the camera service if the device runs it under systemd (it follows `current`)."""
    probe = device.run(["sh", "-c", f"command -v systemctl >/dev/null && systemctl cat {SERVICE_NAME} >/dev/null 2>&1"])
    if probe.returncode != 0:
        return "not installed"
    device.run(["systemctl", "daemon-reload"], timeout=60)  # the unit file may have been rewritten
    restarted = device.run(["systemctl", "restart", SERVICE_NAME], timeout=120)
    last = (restarted.stderr.strip().splitlines() or ["(no output)"])[-1]
    return "restarted" if restarted.returncode == 0 else f"restart failed: {last}"


@dataclass(frozen=True)
class Verdict:
    """What a restart did: `text` for the operator ('restarted, healthy in N s', 'unhealthy: REASON',
    'restart failed: ...', 'not installed'); `failure` says how it failed, None when it did not."""

    text: str
    failure: str | None = None  # "did not restart" or "did not prove healthy"


def restart_and_prove(device, release: str, profile: dict) -> Verdict:
    """Restart the service and, where systemd runs it, wait for the release to prove healthy."""
    since = device_time(device)
    service = restart_service(device)
    if service.startswith("restart failed"):
        return Verdict(service, "did not restart")
    if service != "restarted":
        return Verdict(service)
    verdict = wait_healthy(device, release, profile, since, restart_count(device))
    if not verdict["healthy"]:
        return Verdict(f"unhealthy: {verdict['reason']} within {verdict['seconds']:g} s", "did not prove healthy")
    return Verdict(f"restarted, healthy in {verdict['seconds']:g} s")
