"""Deploy on this machine (--local): real bundles, real pip installs with no index, real self-tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import artifact, json_out, resign, run_cli, variant as _variant
from edgetl.contract.sidecar import sha256_file
from edgetl.deploy.bundle import CHECKSUMS, MANIFEST, build_bundle, verify_bundle
from edgetl.deploy.local import current_release, install_release
from edgetl.deploy.rollback import rollback
from edgetl.deploy.profiles import get_profile
from edgetl.deploy.signing import TRUSTED_KEYS, public_key
from edgetl.errors import CheckFailedError

pytestmark = pytest.mark.slow


def _rehash(bundle: Path, sign: bool = True) -> None:
    """The manifest's and SHA256SUMS' digests recomputed; signed again (`sign`, the builder) or not (an
    attacker who changed files but has no signing key)."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"] = {name: sha256_file(bundle / name) for name in manifest["files"]}
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    resign(bundle, sign=sign)


def test_bundle_is_complete_and_verifies(x86_bundle):
    manifest = json.loads((x86_bundle / MANIFEST).read_text())
    assert verify_bundle(x86_bundle) == []
    names = set(manifest["files"])
    assert {"install.sh", "edgetl.service", "model/model.onnx", "model/model.json", "samples/labels.json"} <= names
    wheels = manifest["wheels"]
    assert any(w.startswith("edgetl-") for w in wheels) and any(w.startswith("onnxruntime-") for w in wheels)
    assert all("aarch64" not in w for w in wheels)
    assert '"-m" "edgetl" "run"' in (x86_bundle / "edgetl.service").read_text()


def test_deploy_switch_rollback_and_failures_leave_current(x86_bundle, tmp_path):
    device = tmp_path / "device"
    v1 = install_release(_variant(x86_bundle, tmp_path, "20260101-000000-v1"), device)
    assert v1["self_test"]["passed"] and v1["previous_release"] is None
    assert v1["service"] == "not installed"  # no systemd unit on the CI machine
    assert current_release(device) == "20260101-000000-v1"
    assert v1["bench"]["p50_ms"] > 0 and 0 <= v1["accuracy"] <= 1
    # The release runs from its own venv, installed from the bundled wheels with no index.
    release_python = device / "current" / "venv" / "bin" / "python"
    assert subprocess.run([str(release_python), "-c", "import torch"], capture_output=True).returncode != 0
    # What the systemd unit runs works from the renamed release folder.
    service = (device / "current" / "edgetl.service").read_text()
    assert 'current/venv/bin/python" "-m" "edgetl" "run"' in service
    selftest = subprocess.run([str(release_python), "-m", "edgetl", "selftest", str(device / "current"), "--json",
                               "--quiet", "--runs", "3"], capture_output=True, text=True)
    assert selftest.returncode == 0 and json.loads(selftest.stdout)["passed"], selftest.stderr[-1000:]

    corrupted = _variant(x86_bundle, tmp_path, "20260102-000000-v2")
    model = corrupted / "model" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-100])
    with pytest.raises(CheckFailedError, match="checksum"):
        install_release(corrupted, device)
    assert current_release(device) == "20260101-000000-v1"
    assert not list((device / "releases").glob("*.partial"))

    wrong_pre = _variant(x86_bundle, tmp_path, "20260103-000000-v3")
    sidecar_path = wrong_pre / "model" / "model.json"
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["preprocess"]["mean"] = [0.0, 0.0, 0.0]
    sidecar["preprocess"]["std"] = [0.01, 0.01, 0.01]
    sidecar_path.write_text(json.dumps(sidecar))
    _rehash(wrong_pre)  # a bundle *built* with the wrong sidecar: its checksums are consistent
    with pytest.raises(CheckFailedError, match="self-test of .* failed on local: golden"):
        install_release(wrong_pre, device)
    assert current_release(device) == "20260101-000000-v1"

    # The next release with byte-identical wheels copies the running release's environment (a real copy:
    # no file shared with it); one whose environment's stamp differs (other wheels, another Python) is rebuilt.
    assert v1["environment"] == "built"
    v4 = install_release(_variant(x86_bundle, tmp_path, "20260104-000000-v4"), device)
    assert v4["previous_release"] == "20260101-000000-v1" and current_release(device) == "20260104-000000-v4"
    assert v4["environment"] == "copied" and v4["self_test"]["passed"]
    old_numpy, new_numpy = (next((device / "releases" / r / "venv").rglob("numpy/__init__.py"))
                            for r in ("20260101-000000-v1", "20260104-000000-v4"))
    assert old_numpy.stat().st_ino != new_numpy.stat().st_ino and old_numpy.read_bytes() == new_numpy.read_bytes()
    (device / "current" / "venv" / ".edgetl-env").write_text("0" * 64 + "\n")
    v5 = install_release(_variant(x86_bundle, tmp_path, "20260105-000000-v5"), device)
    assert v5["environment"] == "built" and v5["self_test"]["passed"]
    assert (device / "current" / "venv" / ".edgetl-env").read_text() != "0" * 64 + "\n"
    back = rollback(device)
    assert back["release"] == "20260104-000000-v4" and current_release(device) == "20260104-000000-v4"
    assert (device / "current" / "model" / "model.json").is_file()


def test_cli_local_deploy_json_and_rollback(exported, tmp_path):
    model = artifact(exported, "openvino", "fp32")["path"]
    device = tmp_path / "box"
    result = run_cli("deploy", model, "--profile", "intel-cpu", "--local", str(device), "--samples", "8", "--json",
                     check=True)
    data = json_out(result)
    assert {"host", "device", "release", "self_test", "bench", "accuracy", "previous_release"} <= set(data)
    assert data["device"] == "intel-cpu" and data["self_test"]["passed"]
    again = run_cli("deploy", "--rollback", "--local", str(device))
    assert again.returncode == 2 and "no earlier release" in again.stderr


def test_rpi5_bundle_has_aarch64_wheels_for_python_311(exported, tmp_path):
    out = tmp_path / "rpi5.tar.gz"
    result = run_cli("deploy", artifact(exported, "tflite", "int8")["path"], "--profile", "rpi5",
                     "--bundle-only", str(out), "--samples", "4", "--json", check=True)
    data = json_out(result)
    assert data["artifact"]["format"] == "tflite" and data["artifact"]["precision"] == "int8"
    wheels = data["wheels"]
    binary = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert binary and all("aarch64" in w for w in binary), binary
    assert any(w.startswith("ai_edge_litert-") and "cp311" in w for w in wheels), wheels
    # the profile's wheel_constraints: numpy 1.x, which the system's Picamera2 extensions are built for
    numpy = next(w for w in wheels if w.startswith("numpy-"))
    opencv = next(w for w in wheels if w.startswith("opencv_python_headless-"))
    assert numpy.split("-")[1].startswith("1."), numpy
    assert tuple(int(part) for part in opencv.split("-")[1].split(".")[:2]) < (4, 12), opencv
    with tarfile.open(out) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    assert verify_bundle(tmp_path / "x" / "bundle") == []
    manifest = json.loads((tmp_path / "x" / "bundle" / MANIFEST).read_text())
    assert manifest["profile"]["wheel_constraints"] == ["numpy<2", "opencv-python-headless<4.12"]


# -- over SSH, to a real OpenSSH server on loopback ---------------------------------------------
from sshd import SSHD, start_sshd  # noqa: E402

needs_sshd = pytest.mark.skipif(SSHD is None, reason="needs OpenSSH's sshd (.ci/run installs openssh-server)")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def _ssh(server, **overrides):
    from edgetl.deploy.ssh import SshDevice

    options = dict(host="127.0.0.1", port=server.port, username="root", identity=str(server.identity),
                   known_hosts=str(server.known_hosts), python=sys.executable, timeout=10)
    options.update(overrides)
    return SshDevice(**options)


@needs_sshd
def test_ssh_deploy_corrupt_resume_and_rollback(x86_bundle, sshd, tmp_path):
    root = str(tmp_path / "remote" / "opt" / "edgetl")
    device = _ssh(sshd)
    try:
        first = _variant(x86_bundle, tmp_path, "20260201-000000-v1")
        v1 = install_release(first, root, device=device)
        assert v1["host"].endswith(f"127.0.0.1:{sshd.port}") and v1["self_test"]["passed"]
        assert current_release(root, device) == "20260201-000000-v1"
        # The first deploy over the authenticated connection left the deployer's key as the root's trust.
        assert [p.name for p in Path(root, TRUSTED_KEYS).iterdir()] == [f"{public_key()['key_id']}.pem"]

        # One file changed, the manifest and SHA256SUMS recomputed, no signing key: refused on the device.
        tampered = _variant(x86_bundle, tmp_path, "20260201-000001-tampered")
        (tampered / "samples" / "labels.json").write_text("{}")
        _rehash(tampered, sign=False)
        with pytest.raises(CheckFailedError, match="signature of SHA256SUMS does not verify"):
            install_release(tampered, root, device=device)
        assert current_release(root, device) == "20260201-000000-v1"

        corrupted = _variant(x86_bundle, tmp_path, "20260202-000000-v2")
        (corrupted / "model" / "model.onnx").write_bytes(b"not a model")
        with pytest.raises(CheckFailedError, match="checksum"):
            install_release(corrupted, root, device=device)
        assert current_release(root, device) == "20260201-000000-v1"
        assert not list(Path(root, "releases").glob("*.partial"))

        # An upload killed midway leaves a partial release, manifest first as a deploy writes it, a complete
        # file, a torn one and a half-built venv; the next deploy of that release resumes the upload.
        v3 = _variant(x86_bundle, tmp_path, "20260203-000000-v3")
        partial = Path(root, "releases", "20260203-000000-v3.partial")
        shutil.copytree(v3 / "model", partial / "model")
        shutil.copyfile(v3 / MANIFEST, partial / MANIFEST)
        (partial / "model" / "model.onnx").write_bytes((v3 / "model" / "model.onnx").read_bytes()[:5000])
        os.utime(partial / "model" / "model.json", (946684800, 946684800))  # complete: must not be sent again
        (partial / "venv" / "bin").mkdir(parents=True)
        (partial / "venv" / "bin" / "python").write_text("torn")
        result = install_release(v3, root, device=device)
        assert Path(root, "current", "model", "model.json").stat().st_mtime == 946684800
        assert result["previous_release"] == "20260201-000000-v1"
        assert current_release(root, device) == "20260203-000000-v3"
        assert Path(root, "current", "model", "model.onnx").read_bytes() == (v3 / "model" / "model.onnx").read_bytes()

        back = rollback(root, device)
        assert back["release"] == "20260201-000000-v1" and current_release(root, device) == "20260201-000000-v1"
    finally:
        device.close()


@needs_sshd
def test_ssh_refuses_unknown_host_keys_and_unreachable_ports(sshd, tmp_path):
    from edgetl.errors import BadInputError

    empty = tmp_path / "known_hosts"
    with pytest.raises(BadInputError, match="not trusted") as info:
        _ssh(sshd, known_hosts=str(empty))
    assert "--accept-new-host-key" in info.value.hint
    device = _ssh(sshd, known_hosts=str(empty), accept_new_host_key=True)
    device.close()
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519 " in empty.read_text()
    _ssh(sshd, known_hosts=str(empty)).close()  # now trusted
    from sshd import free_port

    with pytest.raises(BadInputError, match="cannot reach"):
        _ssh(sshd, port=free_port(), timeout=3)


@needs_sshd
def test_cli_ssh_deploy_then_rollback_reach_the_device_with_the_same_flags(exported, sshd, tmp_path):
    root = tmp_path / "remote"
    flags = ["--host", "root@127.0.0.1", "--port", str(sshd.port), "--identity", str(sshd.identity),
             "--known-hosts", str(sshd.known_hosts), "--python", sys.executable, "--path", str(root)]
    result = json_out(run_cli("deploy", artifact(exported, "onnx", "fp32")["path"], "--profile", "linux-x86",
                              *flags, "--samples", "4", "--json", check=True))
    assert result["host"] == f"root@127.0.0.1:{sshd.port}" and result["self_test"]["passed"]
    assert current_release(root) == result["release"]
    back = run_cli("deploy", "--rollback", *flags)
    assert back.returncode == 2 and f"root@127.0.0.1:{sshd.port}:{root} keeps no earlier release" in back.stderr


@needs_sshd
def test_fleet_of_three_hosts_in_parallel(exported, tmp_path):
    servers = [start_sshd(tmp_path / f"host{i}") for i in range(3)]
    try:
        inventory = tmp_path / "fleet.yaml"
        inventory.write_text("hosts:\n" + "".join(
            f"  - {{host: 127.0.0.1, port: {s.port}, user: root, identity: {s.identity}, known_hosts: {s.known_hosts},"
            f" path: {tmp_path / f'device{i}'}}}\n" for i, s in enumerate(servers)))
        result = run_cli("deploy", artifact(exported, "onnx", "int8")["path"], "--profile", "linux-x86",
                         "--hosts", str(inventory), "--python", sys.executable, "--samples", "6", "--json", check=True)
        rows = json_out(result)["hosts"]
        assert len(rows) == 3 and all(r["ok"] and r["self_test"]["passed"] for r in rows), rows
        assert len({r["host"] for r in rows}) == 3
        for i in range(3):
            assert current_release(tmp_path / f"device{i}") == rows[0]["release"]
    finally:
        for server in servers:
            server.stop()


def test_jetson_bundle_builds_the_tensorrt_engine_on_the_device(exported, tmp_path):
    """No Jetson here: check the commands the bundle will run there (engine built on the device)."""
    bundle = tmp_path / "jetson"
    manifest = build_bundle(Path(artifact(exported, "onnx", "int8")["path"]), get_profile("jetson-orin-nano"),
                            bundle, samples=2)
    script = (bundle / "build_engine.sh").read_text()
    assert 'trtexec --onnx="$here"/model/model.onnx --saveEngine="$here"/model/trt_cache/model.engine' in script
    assert "--int8 --fp16" in script
    install = (bundle / "install.sh").read_text()
    assert "--system-site-packages" in install and "build_engine.sh" in install
    assert not any(w.startswith("onnxruntime") for w in manifest["wheels"])  # JetPack's own wheel is used
    assert all("aarch64" in w for w in manifest["wheels"] if not w.endswith("none-any.whl"))
    assert any("cp310" in w for w in manifest["wheels"])
    assert subprocess.run(["sh", "-n", str(bundle / "build_engine.sh")]).returncode == 0
    # the CSI camera is a GStreamer pipeline: the system's OpenCV (built with GStreamer) must win
    assert "uninstall -y -q opencv-python-headless" in install and "GStreamer" in install
    assert subprocess.run(["sh", "-n", str(bundle / "install.sh")]).returncode == 0
    assert "nvarguscamerasrc" in (bundle / "edgetl.service").read_text()


def test_pi_service_asks_the_camera_for_the_profiles_capture_mode(exported, tmp_path):
    bundle = tmp_path / "rpi5"
    build_bundle(Path(artifact(exported, "tflite", "int8")["path"]), get_profile("rpi5"), bundle, samples=2,
                 wheels=False)
    service = (bundle / "edgetl.service").read_text()
    # The Camera Module through Picamera2 (libcamera): OpenCV's V4L2 capture gets no frames from it.
    assert ('"--source" "picamera2" "--threads" "4" "--camera-size" "640x480" "--camera-fps" "30" "--serve" "8080" '
            '"--serve-host" "0.0.0.0"') in service
    install = (bundle / "install.sh").read_text()
    assert "opencv-python-headless" not in install
    assert "--system-site-packages" not in install  # the venv stays isolated: no system package shadows a wheel
    # the system's Picamera2 is linked into the release venv (install and deploy pass on what it lacks)
    assert 'system_camera "$here/venv"\n' in install
    assert subprocess.run(["sh", "-n", str(bundle / "install.sh")]).returncode == 0
