"""Installing a bundle as a release, switching to it atomically, and rolling back.

    ROOT/releases/<id>.partial/   while uploading, verifying, installing and self-testing
    ROOT/releases/<id>/           a release that passed its self-test
    ROOT/current -> releases/<id> switched with one rename of a fresh symlink: atomic
    ROOT/state.json               current and previous release, history

The steps are written once against a small `Device` interface (run a command,
upload a folder, read/write a small file), so `--local` and SSH deploys do exactly
the same thing. Any failure removes the partial release and leaves `current`
untouched. Commands are argument lists, quoted by the transport.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

from edgetl.console import info
from edgetl.deploy.bundle import CHECKSUMS, MANIFEST
from edgetl.errors import BadInputError, CheckFailedError

KEEP_RELEASES = 3


class LocalDevice:
    """This machine as the device (`--local PATH`)."""

    name = "local"

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable

    def run(self, argv: list[str], check: bool = False) -> subprocess.CompletedProcess:
        result = subprocess.run(argv, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise CheckFailedError(f"{argv[0]} failed on {self.name}: {_last_line(result.stderr)}")
        return result

    def upload(self, bundle: Path, target: str) -> None:
        shutil.copytree(bundle, target, dirs_exist_ok=True)

    def read_text(self, path: str) -> str | None:
        return Path(path).read_text() if Path(path).is_file() else None

    def write_text(self, path: str, text: str) -> None:
        from edgetl import atomic

        atomic.write_text(path, text)

    def close(self) -> None:
        pass


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or ["(no output)"])[-1]


def current_release(root: Path | str, device=None) -> str | None:
    device = device or LocalDevice()
    result = device.run(["readlink", str(PurePosixPath(root) / "current")])
    return PurePosixPath(result.stdout.strip()).name if result.returncode == 0 and result.stdout.strip() else None


def switch(device, root: str, release: str) -> None:
    """Point `current` at releases/<release>: a fresh symlink renamed over the old one."""
    tmp, current = f"{root}/.current.tmp", f"{root}/current"
    device.run(["ln", "-sfn", f"releases/{release}", tmp], check=True)
    device.run(["mv", "-Tf", tmp, current], check=True)


def _state(device, root: str) -> dict:
    text = device.read_text(f"{root}/state.json")
    return json.loads(text) if text else {"history": []}


def _releases(device, root: str) -> list[str]:
    result = device.run(["ls", "-1", f"{root}/releases"])
    return sorted(n for n in result.stdout.split() if n and not n.endswith(".partial")) if result.returncode == 0 else []


def _prune(device, root: str, keep: int) -> None:
    state = _state(device, root)
    protected = {state.get("current"), state.get("previous")}
    for old in _releases(device, root)[:-keep]:
        if old not in protected:
            device.run(["rm", "-rf", f"{root}/releases/{old}"])


def install_release(bundle: Path, root: Path | str, device=None, keep: int = KEEP_RELEASES,
                    threads: int | None = None) -> dict:
    """Upload, verify, install, self-test and switch; returns the deploy result."""
    device = device or LocalDevice()
    root = str(root)
    manifest = json.loads((bundle / MANIFEST).read_text())
    release = manifest["bundle"]
    partial, final = f"{root}/releases/{release}.partial", f"{root}/releases/{release}"
    previous = current_release(root, device)
    if release in _releases(device, root):
        raise BadInputError(f"release {release} is already installed on {device.name}", "build a new bundle")
    device.run(["mkdir", "-p", partial], check=True)
    try:
        info(f"uploading release {release} to {device.name}:{root}")
        device.upload(bundle, partial)  # resumes: files already there with the right digest are kept
        checked = device.run(["sh", "-c", f"cd {_quote(partial)} && sha256sum --quiet -c {CHECKSUMS}"])
        if checked.returncode != 0:
            bad = [line.split(":")[0] for line in checked.stdout.splitlines() if "FAILED" in line]
            raise CheckFailedError(f"checksum mismatch on {device.name} in {len(bad) or 'some'} file(s)"
                                   + (f", e.g. {bad[0]}" if bad else ""),
                                   "the bundle was corrupted in transit or on disk; deploy again")
        python = getattr(device, "python", None) or f"python{manifest['profile']['python']}"
        installed = device.run(["env", f"PYTHON={python}", "sh", f"{partial}/install.sh"])
        if installed.returncode != 0:
            raise CheckFailedError(f"install failed on {device.name}: {_last_line(installed.stderr)}",
                                   "check the bundle's wheels match the device's platform and Python")
        command = [f"{partial}/venv/bin/python", "-m", "edgetl", "selftest", partial, "--json", "--quiet"]
        if threads:
            command += ["--threads", str(threads)]
        selftest = device.run(command)
        try:
            report = json.loads(selftest.stdout)
        except json.JSONDecodeError:
            raise CheckFailedError(f"self-test could not run on {device.name}: {_last_line(selftest.stderr)}") from None
        if not report.get("passed"):
            raise CheckFailedError(f"self-test failed: {report.get('reason', 'see the report')}")
        device.run(["mv", "-T", partial, final], check=True)
    except BaseException:
        device.run(["rm", "-rf", partial])
        raise
    switch(device, root, release)
    state = _state(device, root)
    state.update(current=release, previous=previous, history=[*state.get("history", []), release][-20:])
    device.write_text(f"{root}/state.json", json.dumps(state, indent=2) + "\n")
    _prune(device, root, keep)
    service = restart_service(device)
    return {"host": device.name, "path": root, "device": manifest["profile"]["name"], "release": release,
            "self_test": {k: report[k] for k in ("passed", "integrity", "golden") if k in report},
            "bench": report.get("bench"), "accuracy": report.get("accuracy"), "previous_release": previous,
            "service": service}


SERVICE_NAME = "edgetl.service"


def restart_service(device) -> str:
    """Restart the camera service if the device runs it under systemd (it follows `current`)."""
    probe = device.run(["sh", "-c", f"command -v systemctl >/dev/null && systemctl cat {SERVICE_NAME} >/dev/null 2>&1"])
    if probe.returncode != 0:
        return "not installed"
    restarted = device.run(["systemctl", "restart", SERVICE_NAME])
    return "restarted" if restarted.returncode == 0 else f"restart failed: {_last_line(restarted.stderr)}"


def rollback(root: Path | str, device=None) -> dict:
    """Switch `current` back to the previous release (no run directory or profile needed)."""
    device = device or LocalDevice()
    root = str(root)
    current = current_release(root, device)
    if current is None:
        raise BadInputError(f"{device.name}:{root} has no current release to roll back from")
    state = _state(device, root)
    candidates = [r for r in _releases(device, root) if r != current]
    target = state.get("previous") if state.get("previous") in candidates else (candidates[-1] if candidates else None)
    if target is None:
        raise BadInputError(f"{device.name}:{root} keeps no earlier release to roll back to")
    switch(device, root, target)
    state.update(current=target, previous=current)
    device.write_text(f"{root}/state.json", json.dumps(state, indent=2) + "\n")
    return {"host": device.name, "path": root, "release": target, "previous_release": current,
            "service": restart_service(device)}


def _quote(value: str) -> str:
    return shlex.quote(value)

