"""Where an artifact came from, and whether a published one still matches its sources.

The key hashes everything that decides an artifact's bytes (checkpoint, format, precision,
the gate's settings, edgetl's version): an export rerun skips an artifact whose key matches
and whose files still match their checksums, and redoes any other.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from edgetl import __version__
from edgetl.contract.formats import FORMATS
from edgetl.contract.sidecar import Sidecar, verify_files
from edgetl.errors import EdgetlError, MissingBackendError

GATE_VERSION = 2


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def check_converters(formats: list[str]) -> None:
    for name in formats:
        for package in FORMATS[name].converter:
            if importlib.util.find_spec(package) is None:
                raise MissingBackendError(package, FORMATS[name].extra, f"exporting {name}")


def source_key(reference, fmt: str, precision: str, settings: dict) -> str:
    text = json.dumps([reference.checkpoint_sha256, fmt, precision, settings, __version__], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def up_to_date(target: Path, key: str) -> Sidecar | None:
    try:
        sidecar = Sidecar.read(target)
    except EdgetlError:
        return None
    if sidecar.source.get("key") != key or verify_files(target, sidecar):
        return None
    return sidecar


def source_record(reference, key: str) -> dict:
    """The sidecar's `source`: for people and provenance; no later step reads the run from it."""
    return {"run_dir": str(reference.run.path.resolve()), "model": reference.model_name,
            "checkpoint_sha256": reference.checkpoint_sha256,
            "split_digest": reference.run.read_dataset().get("split_digest"), "edgetl_version": __version__,
            "git_commit": git_commit(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "key": key}
