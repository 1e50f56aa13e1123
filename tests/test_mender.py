"""Mender artifacts from a bundle, read and validated by Mender's own tool (Debian's mender-artifact)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edgetl.errors import BadInputError

MENDER_ARTIFACT = shutil.which("mender-artifact")
pytestmark = pytest.mark.skipif(MENDER_ARTIFACT is None, reason="needs mender-artifact (.ci/run installs it)")


def _keys(folder: Path, name: str) -> tuple[Path, Path]:
    """An ECDSA P-256 signing key in SEC1 form (what mender-artifact reads) and its public key."""
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    subprocess.run(["openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", str(private)], check=True)
    subprocess.run(["openssl", "ec", "-in", str(private), "-pubout", "-out", str(public)], check=True,
                   capture_output=True)
    return private, public


def _mender(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MENDER_ARTIFACT, *args], capture_output=True, text=True)


def test_a_bundle_becomes_a_signed_mender_artifact_that_mender_reads_and_verifies(tmp_path):
    import json
    import tarfile

    from test_audit import _installable_bundle

    from edgetl.deploy.mender import write_artifact

    bundle = _installable_bundle(tmp_path, "b0")
    release = json.loads((bundle / "manifest.json").read_text())["bundle"]
    private, public = _keys(tmp_path, "fleet")
    out = tmp_path / "release.mender"
    result = write_artifact(bundle, out, ["rpi4", "rpi5"], private)
    assert result["name"] == f"edgetl-{release}" and result["signed"]

    read = _mender("read", str(out))
    assert read.returncode == 0, read.stderr
    assert f"Name: edgetl-{release}" in read.stdout and "Version: 3" in read.stdout
    assert "Type:   edgetl" in read.stdout and "'[rpi4 rpi5]'" in read.stdout
    assert f"edgetl.release: {release}" in read.stdout and "name:     edgetl-bundle.tar.gz" in read.stdout
    assert _mender("validate", "-k", str(public), str(out)).returncode == 0
    _, stranger = _keys(tmp_path, "stranger")
    assert _mender("validate", "-k", str(stranger), str(out)).returncode != 0  # another key: refused

    # The payload is the very bundle: the same files, edgetl's own signature inside.
    with tarfile.open(out) as artifact:
        data = artifact.extractfile("data/0000.tar.gz")
        with tarfile.open(fileobj=data) as payload:
            inner = payload.extractfile("edgetl-bundle.tar.gz")
            with tarfile.open(fileobj=inner) as packed:
                names = set(packed.getnames())
    assert {"bundle/manifest.json", "bundle/SHA256SUMS", "bundle/SHA256SUMS.sig", "bundle/install.sh"} <= names


def test_a_mender_key_mender_artifact_cannot_read_is_one_line(tmp_path):
    from test_audit import _installable_bundle

    from edgetl.deploy.mender import write_artifact

    pkcs8 = tmp_path / "pkcs8.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
                    str(pkcs8)], check=True, capture_output=True)
    with pytest.raises(BadInputError, match="mender-artifact could not write the artifact") as info:
        write_artifact(_installable_bundle(tmp_path, "b0"), tmp_path / "x.mender", ["rpi4"], pkcs8)
    assert "SEC1" in info.value.hint and not (tmp_path / "x.mender").exists()
    with pytest.raises(BadInputError, match="is not a file"):
        write_artifact(_installable_bundle(tmp_path, "b1"), tmp_path / "x.mender", ["rpi4"], tmp_path / "missing")
