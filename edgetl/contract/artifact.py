"""An artifact folder stands alone: what later steps need beyond model.json travels inside it.

    ARTIFACT/model.json              the sidecar (contract/sidecar.py)
    ARTIFACT/samples/labels.json     {file: label} of held-out photos shipped for the self-test
    ARTIFACT/samples/0000.png ...
    ARTIFACT/parity.json             its parity summary: test accuracy, drop, agreement

`edgetl bench` and `edgetl deploy` read these, never the run directory, so an artifact
copied to another machine (or to a device) reports its accuracy and self-tests on
held-out photos there.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgetl.errors import BadInputError

SAMPLES_DIR = "samples"
LABELS_FILE = "labels.json"
PARITY_FILE = "parity.json"
PARITY_FIELDS = ("split", "images", "accuracy", "float_accuracy", "drop_pp", "agreement", "status", "int8_over_fp32")


def read_samples(artifact: str | Path) -> dict[str, str]:
    """{file name: label} of an artifact's samples; {} for one made before artifacts carried them."""
    path = Path(artifact) / SAMPLES_DIR / LABELS_FILE
    if not path.is_file():
        return {}
    try:
        labels = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path}: not JSON ({exc.msg})", "re-export the artifact") from exc
    plain = isinstance(labels, dict) and all(
        isinstance(k, str) and isinstance(v, str) and k and "/" not in k and "\\" not in k and not k.startswith(".")
        for k, v in labels.items())
    if not plain:
        raise BadInputError(f"{path}: expected {{plain file name: label}}", "re-export the artifact")
    return labels


def read_parity(artifact: str | Path) -> dict | None:
    """The artifact's own parity summary, or None before `edgetl parity` ran on it; a number that is not a
    finite number (NaN, a string) reads as missing."""
    path = Path(artifact) / PARITY_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    return {k: data.get(k) if k not in _PARITY_NUMBERS or _finite(data.get(k)) else None for k in PARITY_FIELDS}


_PARITY_NUMBERS = ("images", "accuracy", "float_accuracy", "drop_pp", "agreement", "int8_over_fp32")


def _finite(value) -> bool:
    """A real, finite number (a parity.json is untrusted: NaN compares False with every bound)."""
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def int8_over_fp32(sidecar) -> float | None:
    """The int8 artifact's p50 over its format's fp32 p50 as measured at export (`validation.speed.ratio`),
    or None: not int8, not measured, or not a finite positive number (a sidecar is untrusted input)."""
    import math

    validation = getattr(sidecar, "validation", None)
    record = validation.get("speed") if isinstance(validation, dict) else None
    ratio = record.get("ratio") if isinstance(record, dict) else None
    if getattr(sidecar, "precision", None) != "int8" or isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        return None
    return float(ratio) if math.isfinite(ratio) and ratio > 0 else None
