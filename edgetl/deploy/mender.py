"""A Mender artifact from a release bundle: edgetl's release handed to a fleet's over-the-air engine.

Mender (server plus a client on each device) does the scheduling, phased rollouts, retries,
reporting, device authentication and signatures for fleets that SSH cannot reach. edgetl writes
its offline bundle (model, sidecar, samples, wheels, SHA256SUMS and its own Ed25519 signature)
as the one payload file of a Mender artifact, format version 3, payload type `edgetl`, for the
device types given (default: the profile's name), with Mender's own tool, `mender-artifact`
(Debian's package of it, or the binary from Mender), so the format is Mender's own:

- artifact name `edgetl-<release id>` (the id begins with the UTC build time and the model's digest),
  provides `edgetl.release: <id>` and software version `<id>` under `rootfs-image.edgetl`;
- `--sign-key KEY` signs it with Mender's artifact signing (an RSA, or an ECDSA P-256 key in SEC1
  "EC PRIVATE KEY" form, which is what mender-artifact 3.9 reads); a client configured with the
  public key refuses anything else.

The device side is the `edgetl` update module (`mender_module.sh`, written beside the artifact as
OUT.update-module): it installs into the same releases/ + current layout the SSH deploy uses,
self-tests at ArtifactInstall, switches and proves health at ArtifactCommit, and goes back to the
release that was current at ArtifactRollback and ArtifactFailure.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from edgetl import atomic
from edgetl.deploy.bundle import pack
from edgetl.deploy.local import read_manifest
from edgetl.deploy.service import plain_path
from edgetl.errors import BadInputError

PAYLOAD_TYPE = "edgetl"
PAYLOAD_FILE = "edgetl-bundle.tar.gz"


def _tool() -> str:
    tool = shutil.which("mender-artifact")
    if tool is None:
        raise BadInputError("mender-artifact is not installed here: it writes and signs Mender artifacts",
                            "apt install mender-artifact (Debian, Ubuntu), or get it from docs.mender.io")
    return tool


def _key(path: str | Path) -> str:
    key = Path(path).expanduser()
    if not key.is_file():
        raise BadInputError(f"--sign-key {key} is not a file", "give the PEM private key Mender clients trust")
    return str(key)


UPDATE_MODULE = Path(__file__).with_name("mender_module.sh")
"""The device side: install it as /usr/share/mender/modules/v3/edgetl (mode 0755) in the device image."""


def write_artifact(bundle: Path, out: str | Path, device_types: list[str], sign_key: str | Path | None = None,
                   root: str | None = None) -> dict:
    """Write `out` (atomically): a Mender artifact whose payload is `bundle` packed, and beside it
    OUT.update-module, the update module; `root` (the install folder on the device) goes into the
    payload's meta-data for the module. Returns what it holds."""
    import json

    manifest = read_manifest(bundle)
    root = plain_path(root or manifest["profile"].get("install_path") or "/opt/edgetl")
    release = manifest["bundle"]
    if not device_types:
        raise BadInputError("a Mender artifact needs at least one device type", "pass --mender-device-type NAME")
    tool, key = _tool(), _key(sign_key) if sign_key else None
    with tempfile.TemporaryDirectory(prefix="edgetl-mender-") as tmp:
        payload = pack(bundle, Path(tmp) / PAYLOAD_FILE)
        (Path(tmp) / "meta-data.json").write_text(json.dumps({"root": root}))
        written = Path(tmp) / "artifact.mender"
        command = [tool, "write", "module-image", "-T", PAYLOAD_TYPE, "-n", f"edgetl-{release}", "-f", str(payload),
                   "-o", str(written), "--software-name", "edgetl", "--software-version", release,
                   "-p", f"edgetl.release:{release}", "-m", str(Path(tmp) / "meta-data.json"),
                   "--compression", "gzip"]
        for device_type in device_types:
            command += ["-t", device_type]
        if key:
            command += ["-k", key]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise BadInputError(f"mender-artifact could not write the artifact: {last}",
                                "an ECDSA key must be in SEC1 form (openssl ecparam -genkey -name prime256v1 -noout)"
                                if key else None)
        atomic.write_with(out, lambda target: shutil.copyfile(written, target))
    module = Path(f"{out}.update-module")
    atomic.write_bytes(module, UPDATE_MODULE.read_bytes(), mode=0o755)
    return {"artifact": str(out), "name": f"edgetl-{release}", "release": release, "payload_type": PAYLOAD_TYPE,
            "device_types": list(device_types), "signed": bool(key), "root": root, "update_module": str(module)}
