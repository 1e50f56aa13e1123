"""Where an artifact came from, and whether a published one still matches its sources.

The key hashes everything that decides an artifact's bytes (checkpoint, format, precision,
the gate's settings, edgetl's version, a digest of edgetl's own source and the versions of
the format's converters): an export rerun skips an artifact whose key matches and whose
files still match their checksums, and redoes any other. The source digest matters for
editable installs, where the code changes and the version does not: an artifact made by an
older exporter must not be reused as if the new one had made it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from edgetl import __version__
from edgetl.contract.formats import FORMATS
from edgetl.contract.sidecar import Sidecar, verify_files
from edgetl.errors import EdgetlError, MissingBackendError

GATE_VERSION = 4  # 3: the speed check (int8 slower than fp32 misses); 4: agreement on shifted views, 98.5%


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


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 over edgetl's own .py files (path and bytes): the exporter's code, whatever the version says."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def converter_versions(fmt: str) -> dict[str, str | None]:
    """Installed versions of the packages that convert `fmt` (an upgrade changes the bytes)."""
    found = _distributions()
    versions = {}
    for package in FORMATS[fmt].converter:
        try:
            versions[package] = importlib.metadata.version((found.get(package) or [package])[0])
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


@functools.lru_cache(maxsize=1)
def _distributions() -> dict:
    return importlib.metadata.packages_distributions()


def source_key(reference, fmt: str, precision: str, settings: dict) -> str:
    text = json.dumps([reference.checkpoint_sha256, fmt, precision, settings, __version__, code_digest(),
                       converter_versions(fmt)], sort_keys=True)
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
