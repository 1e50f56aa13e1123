"""Mender artifacts from a bundle, read and validated by Mender's own tool (Debian's mender-artifact)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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


def _tampered(artifact: Path, out: Path) -> Path:
    """The same artifact (signed header and all) with its payload swapped for another gzipped tar: what an
    attacker without the signing key can make."""
    import io
    import tarfile

    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as inner:
        data = b"#!/bin/sh\necho owned\n"
        info = tarfile.TarInfo("edgetl-bundle.tar.gz")
        info.size = len(data)
        inner.addfile(info, io.BytesIO(data))
    with tarfile.open(artifact) as source, tarfile.open(out, "w") as target:
        for member in source.getmembers():
            content = source.extractfile(member).read()
            if member.name.startswith("data/"):
                content = payload.getvalue()
                member.size = len(content)
            target.addfile(member, io.BytesIO(content))
    return out


def _mender(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MENDER_ARTIFACT, *args], capture_output=True, text=True)


def test_a_bundle_becomes_a_signed_mender_artifact_that_mender_reads_and_verifies(tmp_path):
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
    tampered = _tampered(out, tmp_path / "tampered.mender")
    assert _mender("validate", "-k", str(public), str(tampered)).returncode != 0  # the payload changed: refused

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


MENDER = shutil.which("mender")
MODULES, MENDER_ETC = Path("/usr/share/mender/modules/v3"), Path("/etc/mender")


class Client:
    """The real `mender` client in standalone mode, in its own mount namespace: its update module folder
    and /etc/mender are this test's folders bind-mounted over the host's (which stay untouched), and its
    configuration and data folder are the test's too."""

    def __init__(self, folder: Path, verify_key: Path, env: dict):
        self.folder, self.env = folder, env
        for name in ("modules", "etc", "data/scripts"):
            (folder / name).mkdir(parents=True, exist_ok=True)
        from edgetl.deploy.mender import UPDATE_MODULE

        (folder / "modules" / "edgetl").write_bytes(UPDATE_MODULE.read_bytes())
        (folder / "modules" / "edgetl").chmod(0o755)
        (folder / "etc" / "artifact_info").write_text("artifact_name=factory\n")
        (folder / "data" / "device_type").write_text("device_type=linux-x86\n")
        (folder / "mender.conf").write_text(json.dumps({"ArtifactVerifyKey": str(verify_key),
                                                        "DeviceTypeFile": str(folder / "data" / "device_type")}))

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        import shlex

        script = (f"mount --bind {shlex.quote(str(self.folder / 'modules'))} {MODULES} && "
                  f"mount --bind {shlex.quote(str(self.folder / 'etc'))} {MENDER_ETC} && exec "
                  + shlex.join([MENDER, "-c", str(self.folder / "mender.conf"), "-d", str(self.folder / "data"),
                                "--no-syslog", *args]))
        return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=self.env,
                              timeout=900)


@pytest.mark.slow
@pytest.mark.skipif(MENDER is None or not MODULES.is_dir() or not MENDER_ETC.is_dir() or os.geteuid() != 0,
                    reason="needs the mender client (Debian's mender-client) and root for its mount namespace")
def test_the_real_mender_client_installs_commits_refuses_and_rolls_back_edgetl_releases(x86_bundle, tmp_path,
                                                                                        monkeypatch):
    from conftest import resign, variant
    from test_release_safety import _stop_service, _systemd_stand_in, service_variant

    from edgetl.deploy.local import LocalDevice, current_release, read_state
    from edgetl.deploy.mender import write_artifact

    root = tmp_path / "opt-edgetl"
    private, public = _keys(tmp_path, "fleet")
    env = {**os.environ, "PATH": f"{_systemd_stand_in(tmp_path, root)}:{os.environ['PATH']}",
           "PYTHON": sys.executable, "EDGETL_MENDER_PYTHON": sys.executable}
    client = Client(tmp_path / "client", public, env)

    def artifact(bundle: Path, key: Path = private) -> Path:
        out = tmp_path / f"{bundle.name}.mender"
        write_artifact(bundle, out, ["linux-x86"], key, root=str(root))
        return out

    try:
        # A good release installs (signature, checksums, venv, self-test), then commits: current and service switch.
        good = service_variant(x86_bundle, tmp_path, "20260601-000000-good", root)
        installed = client("install", str(artifact(good)))
        assert installed.returncode == 0, installed.stderr[-3000:]
        assert current_release(root) is None  # installed, not yet committed
        committed = client("commit")
        assert committed.returncode == 0, committed.stderr[-3000:]
        assert current_release(root) == "20260601-000000-good"
        assert client("show-artifact").stdout.strip() == "edgetl-20260601-000000-good"

        # Signed by a key the client does not trust: refused before the module runs.
        stranger_private, _ = _keys(tmp_path, "stranger")
        refused = client("install", str(artifact(variant(x86_bundle, tmp_path, "20260601-000001-foreign"),
                                                 stranger_private)))
        assert refused.returncode != 0 and "signature" in refused.stderr.lower(), refused.stderr[-2000:]
        assert current_release(root) == "20260601-000000-good"
        # Tampered after signing (the payload swapped): refused, nothing runs.
        tampered = client("install", str(_tampered(artifact(variant(x86_bundle, tmp_path, "20260601-000001-t")),
                                                   tmp_path / "tampered.mender")))
        assert tampered.returncode != 0, tampered.stderr[-2000:]
        assert current_release(root) == "20260601-000000-good" and not (root / "releases" / "20260601-000001-t").exists()

        # A release whose self-test fails is never committed; the previous one stays.
        wrong = service_variant(x86_bundle, tmp_path, "20260601-000002-wrong", root)
        sidecar = json.loads((wrong / "model" / "model.json").read_text())
        sidecar["preprocess"]["mean"], sidecar["preprocess"]["std"] = [0.0] * 3, [0.01] * 3
        (wrong / "model" / "model.json").write_text(json.dumps(sidecar))
        _rehash_signed(wrong, resign)
        failed = client("install", str(artifact(wrong)))
        assert failed.returncode != 0 and "self-test" in failed.stderr, failed.stderr[-3000:]
        assert current_release(root) == "20260601-000000-good"

        # A release whose service never proves healthy fails its commit; Mender rolls it back.
        blind = service_variant(x86_bundle, tmp_path, "20260601-000003-blind", root, source="/dev/edgetl-no-camera",
                                window_s=8)
        assert client("install", str(artifact(blind))).returncode == 0
        commit = client("commit")
        assert commit.returncode != 0, commit.stderr[-3000:]
        assert current_release(root) == "20260601-000000-good"
        assert "20260601-000003-blind" in read_state(LocalDevice(), str(root))["bad"]
        assert client("show-artifact").stdout.strip() == "edgetl-20260601-000000-good"
    finally:
        _stop_service(root)


def _rehash_signed(bundle: Path, resign) -> None:
    """The manifest's digests recomputed and the bundle signed again: a bundle *built* with this content."""
    from edgetl.contract.sidecar import sha256_file

    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"] = {name: sha256_file(bundle / name) for name in manifest["files"]}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    resign(bundle)
