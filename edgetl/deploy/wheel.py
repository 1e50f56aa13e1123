"""edgetl itself as a wheel for a device bundle, from wherever this edgetl came from.

A source checkout (an editable install, or running from the tree) builds its wheel with
`pip wheel`. An installed edgetl (`pip install edgetl`, no source tree anywhere) is
repacked from its own installed files, as listed in its RECORD: the package, its
recipes and its dist-info (METADATA with the dependencies and extras, entry points),
with a fresh RECORD. What pip writes for one installation only (INSTALLER, REQUESTED,
direct_url.json, bytecode, the console scripts outside site-packages) is left out;
pip recreates the scripts from the entry points on the device. The wheel is pure
Python, so the one wheel serves every device architecture.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from edgetl.errors import BadInputError

SOURCE_TREE = Path(__file__).resolve().parents[2]
REPRODUCIBLE = (315532800, (1980, 1, 1, 0, 0, 0))  # every wheel entry's date: zip's earliest
PER_INSTALL = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}


def _running_from_source() -> bool:
    """This edgetl is imported from a checkout (editable install, or run from the tree).

    Decided by where the code is, not by package metadata: a checkout's `edgetl.egg-info`
    on the path would otherwise pass for an installed distribution.
    """
    import edgetl

    return (SOURCE_TREE / "pyproject.toml").is_file() and Path(edgetl.__file__).resolve().is_relative_to(SOURCE_TREE)


def _from_source(folder: Path) -> Path:
    """Built from a private copy of the tree: setuptools writes build/ and egg-info where it builds, and
    two bundles built at once from one checkout (parallel deploys, test workers) would race on them.
    SOURCE_DATE_EPOCH makes the same source the same wheel, byte for byte."""
    tree = folder / "edgetl-source"
    shutil.copytree(SOURCE_TREE / "edgetl", tree / "edgetl", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(SOURCE_TREE / name, tree / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(folder), str(tree)], capture_output=True, text=True,
                           env={**os.environ, "SOURCE_DATE_EPOCH": str(REPRODUCIBLE[0])})
    shutil.rmtree(tree, ignore_errors=True)
    wheels = sorted(folder.glob("edgetl-*.whl"))
    if build.returncode != 0 or not wheels:
        last = (build.stderr.strip().splitlines() or ["pip wheel failed"])[-1]
        raise BadInputError(f"could not build the edgetl wheel from {SOURCE_TREE}: {last}")
    return wheels[-1]


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    """One entry with a fixed date: the same files make the same wheel, so a device reuses its environment."""
    entry = zipfile.ZipInfo(name, date_time=REPRODUCIBLE[1])
    entry.compress_type, entry.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
    archive.writestr(entry, data)


def repack_installed(dist: importlib.metadata.Distribution, folder: Path) -> Path:
    """A wheel of an installed distribution, from the files its RECORD lists."""
    files = [f for f in (dist.files or []) if ".." not in f.parts and "__pycache__" not in f.parts
             and f.suffix != ".pyc" and not (f.parts[0].endswith(".dist-info") and f.name in PER_INSTALL)]
    info = next((f.parts[0] for f in files if f.parts[0].endswith(".dist-info")), None)
    if not files or info is None or not any(f.parts[0] == "edgetl" for f in files):
        raise BadInputError(f"the installed edgetl {dist.version} lists no files to repack",
                            "reinstall it with pip, or deploy from a source checkout")
    name = dist.metadata["Name"].replace("-", "_")
    wheel = folder / f"{name}-{dist.version}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry in sorted(files, key=str):
            data = Path(dist.locate_file(entry)).read_bytes()
            _add(archive, str(entry), data)
            record.append(f"{entry},{_digest(data)},{len(data)}")
        record.append(f"{info}/RECORD,,")
        _add(archive, f"{info}/RECORD", ("\n".join(record) + "\n").encode())
    return wheel


def edgetl_wheel(folder: Path) -> Path:
    """Write edgetl's wheel into `folder` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    if _running_from_source():
        return _from_source(folder)
    try:
        dist = importlib.metadata.distribution("edgetl")
    except importlib.metadata.PackageNotFoundError:
        raise BadInputError("edgetl is neither installed nor a source checkout: cannot put it in the bundle") from None
    return repack_installed(dist, folder)
