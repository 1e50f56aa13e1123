"""A device's heartbeat file, read as untrusted text by the health gate and by `edgetl status`.

The service rewrites it about once a second (runtime/status.py). Whatever is in it is size-capped, only
known fields of the right types are kept and strings are cut to one printable line, so a crafted file
can neither fake a healthy release nor flood the terminal.
"""

from __future__ import annotations

import json
import math

MAX_BYTES = 64 * 1024
NUMBERS = ("frames", "dropped", "unknown", "fps", "uptime_s", "time", "min_confidence", "pid")
# Each text field with its length limit: the model path is compared whole by the health gate.
TEXTS = {"release": 200, "model": 4096, "source": 200}


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
    out.update({key: _text(beat.get(key), limit) for key, limit in TEXTS.items()})
    latency = beat.get("infer_ms") if isinstance(beat.get("infer_ms"), dict) else {}
    out["infer_ms"] = {k: _number(latency.get(k)) for k in ("p50", "p99")} if latency else None
    error = beat.get("last_error") if isinstance(beat.get("last_error"), dict) else None
    out["last_error"] = _text(error.get("message"), 300) if error else None
    mqtt = beat.get("mqtt") if isinstance(beat.get("mqtt"), dict) else None
    if mqtt:
        out["mqtt"] = {"broker": _text(mqtt.get("broker")), "connected": mqtt.get("connected") is True,
                       **{k: _number(mqtt.get(k)) for k in ("published", "dropped", "queued")}}
    return out
