"""edgetl installed from its wheel (not an editable checkout) still builds and installs device bundles."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import artifact
from edgetl.deploy.wheel import edgetl_wheel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed_python(tmp_path_factory) -> Path:
    """A venv holding edgetl from its built wheel; its dependencies come from the test venv by a .pth path."""
    root = tmp_path_factory.mktemp("installed")
    wheel = edgetl_wheel(root / "dist")
    # The same source makes the same wheel, byte for byte: a device copies its environment for the same wheels.
    assert edgetl_wheel(root / "again").read_bytes() == wheel.read_bytes()
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   cwd=root)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, cwd=root).stdout.strip()
    # Only the plain path: the test venv's own .pth files (its editable edgetl) are not processed from here.
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # Run from outside the checkout: `python -c` puts the working folder first on sys.path.
    where = subprocess.run([str(python), "-c", "import edgetl; print(edgetl.__file__)"], capture_output=True,
                           text=True, check=True, cwd=root).stdout.strip()
    assert where.startswith(site), where  # the installed copy, not the checkout
    return python


def _record_is_true(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        record_name = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        rows = [line.split(",") for line in archive.read(record_name).decode().splitlines() if line]
        listed = {name for name, _, _ in rows}
        assert listed == set(archive.namelist())
        for name, digest, size in rows:
            if name == record_name:
                continue
            data = archive.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={expected}" and int(size) == len(data), name


def test_bundle_and_deploy_from_an_installed_edgetl(installed_python, exported, tmp_path):
    model = artifact(exported, "onnx", "fp32")["path"]
    bundle = tmp_path / "rpi5.tar.gz"  # aarch64 wheels downloaded for the Pi, edgetl's own repacked
    made = subprocess.run([str(installed_python), "-m", "edgetl", "deploy", model, "--device", "rpi5",
                           "--bundle-only", str(bundle), "--samples", "6", "--json"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        wheel_name = next(n for n in names if n.startswith("bundle/wheels/edgetl-") and n.endswith(".whl"))
        tar.extract(wheel_name, tmp_path, filter="data")
    wheel = tmp_path / wheel_name
    _record_is_true(wheel)
    with zipfile.ZipFile(wheel) as archive:
        inside = set(archive.namelist())
    assert "edgetl/recipes/devices/rpi5.yaml" in inside and "edgetl/recipes/models/efficientnet_lite0.yaml" in inside
    assert any(n.endswith(".dist-info/entry_points.txt") for n in inside)
    assert not any(n.endswith((".pyc", "INSTALLER", "direct_url.json")) for n in inside)

    device = tmp_path / "device"
    deployed = subprocess.run([str(installed_python), "-m", "edgetl", "deploy", model, "--device", "linux-x86",
                               "--local", str(device), "--samples", "6", "--json"],
                              capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    assert json.loads(deployed.stdout)["self_test"]["passed"]
    # The repacked wheel is reproducible too: both bundles carry the same bytes.
    assert (device / "current" / "wheels" / wheel.name).read_bytes() == wheel.read_bytes()
    version = subprocess.run([str(device / "current" / "venv" / "bin" / "python"), "-m", "edgetl", "--version"],
                             capture_output=True, text=True, check=True).stdout
    assert version.strip()
