"""Installing a bundle as a release, switching to it atomically, and rolling back.

    PATH/releases/<id>.partial/   while uploading, verifying, installing and self-testing
    PATH/releases/<id>/           a release that passed its self-test
    PATH/current -> releases/<id> switched with one rename (symlink replace): atomic
    PATH/state.json               current and previous release, history

Any failure removes the partial release and leaves `current` untouched. The same
steps run on a remote device through SSH (deploy/remote.py) and here with `--local`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from edgetl import atomic
from edgetl.console import info
from edgetl.deploy.bundle import MANIFEST, verify_bundle
from edgetl.errors import BadInputError, CheckFailedError

KEEP_RELEASES = 3


def current_release(root: Path) -> str | None:
    link = root / "current"
    return Path(os.readlink(link)).name if link.is_symlink() else None


def switch(root: Path, release: str) -> None:
    """Point `current` at releases/<release> with an atomic rename of a fresh symlink."""
    tmp = root / ".current.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(Path("releases") / release, tmp)
    os.replace(tmp, root / "current")


def _state(root: Path) -> dict:
    path = root / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {"history": []}


def _prune(root: Path, keep: int) -> None:
    state = _state(root)
    protected = {state.get("current"), state.get("previous")}
    finished = sorted(p for p in (root / "releases").iterdir() if p.is_dir() and not p.name.endswith(".partial"))
    for old in finished[:-keep]:
        if old.name not in protected:
            shutil.rmtree(old, ignore_errors=True)


def install_release(bundle: Path, root: Path, python: str | None = None, keep: int = KEEP_RELEASES,
                    threads: int | None = None) -> dict:
    """Copy, verify, install, self-test and switch; returns the deploy result."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    release = manifest["bundle"]
    releases = root / "releases"
    releases.mkdir(parents=True, exist_ok=True)
    partial = releases / f"{release}.partial"
    previous = current_release(root)
    if (releases / release).is_dir():
        raise BadInputError(f"release {release} is already installed in {root}", "build a new bundle to redeploy")
    if partial.exists():
        shutil.rmtree(partial)  # an interrupted earlier attempt: start the copy again
    try:
        info(f"installing release {release} into {root}")
        shutil.copytree(bundle, partial, symlinks=False)
        corrupt = verify_bundle(partial)
        if corrupt:
            raise CheckFailedError(f"checksum mismatch in {len(corrupt)} file(s), e.g. {corrupt[0]}",
                                   "the bundle was corrupted in transit or on disk; rebuild it")
        env = {**os.environ, "PYTHON": python or sys.executable}
        install = subprocess.run(["sh", str(partial / "install.sh")], capture_output=True, text=True, env=env)
        if install.returncode != 0:
            tail = (install.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise CheckFailedError(f"install failed: {tail}", "see the wheels in the bundle for the device platform")
        command = [str(partial / "venv" / "bin" / "edgetl"), "selftest", str(partial), "--json", "--quiet"]
        if threads:
            command += ["--threads", str(threads)]
        selftest = subprocess.run(command, capture_output=True, text=True)
        try:
            report = json.loads(selftest.stdout)
        except json.JSONDecodeError:
            tail = (selftest.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise CheckFailedError(f"self-test could not run: {tail}") from None
        if not report.get("passed"):
            raise CheckFailedError(f"self-test failed: {report.get('reason', 'see the report')}")
        os.replace(partial, releases / release)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    switch(root, release)
    state = _state(root)
    state.update(current=release, previous=previous, history=[*state.get("history", []), release][-20:])
    atomic.write_json(root / "state.json", state)
    _prune(root, keep)
    return {"host": "local", "path": str(root), "device": manifest["profile"]["name"], "release": release,
            "self_test": {k: report[k] for k in ("passed", "integrity", "golden") if k in report},
            "bench": report.get("bench"), "accuracy": report.get("accuracy"), "previous_release": previous}


def rollback(root: Path) -> dict:
    """Switch `current` back to the previous release (no run directory or profile needed)."""
    root = Path(root)
    current = current_release(root)
    if current is None:
        raise BadInputError(f"{root} has no current release to roll back from")
    state = _state(root)
    candidates = sorted(p.name for p in (root / "releases").iterdir()
                        if p.is_dir() and not p.name.endswith(".partial") and p.name != current)
    target = state.get("previous") if state.get("previous") in candidates else (candidates[-1] if candidates else None)
    if target is None:
        raise BadInputError(f"{root} keeps no earlier release to roll back to")
    switch(root, target)
    state.update(current=target, previous=current)
    atomic.write_json(root / "state.json", state)
    return {"host": "local", "path": str(root), "release": target, "previous_release": current}
