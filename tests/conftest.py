"""Shared fixtures: real image folders written from data that ships in packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if not os.environ.get("EDGETL_KEEP_CONFIG"):  # bundles are signed with a key of the test run's, never the user's
    import tempfile

    os.environ["EDGETL_CONFIG_DIR"] = tempfile.mkdtemp(prefix="edgetl-test-config-")


def run_cli(*args: str, cwd: str | Path | None = None, timeout: float = 600, env: dict | None = None,
            check: bool = False) -> subprocess.CompletedProcess:
    """Run the real `edgetl` entry point in a subprocess (what a user runs)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    result = subprocess.run([sys.executable, "-m", "edgetl", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, env=full_env)
    if check and result.returncode != 0:
        raise AssertionError(f"edgetl {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def kill_after_epochs(args: list[str], out: Path, epochs: int, timeout: float = 300) -> int:
    """Start `edgetl finetune ARGS --out OUT` and kill -9 it once `epochs` metric lines are written.

    Returns the exit status (-SIGKILL when it was killed, as the resume tests require)."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "edgetl", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics, deadline = out / "metrics.jsonl", time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and metrics.read_text().count("\n") >= epochs:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    return proc.wait()


def json_out(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """Ten classes of real handwritten digits, 16 each, 32 px: small enough to train in seconds."""
    from edgetl.data.demo import write_demo_data

    out = tmp_path_factory.mktemp("data") / "digits"
    write_demo_data(out, per_class=16, size=32)
    return out


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, digits_dir) -> dict:
    """A short real fine-tune of pretrained EfficientNet-Lite0, shared by tests that need a finished run."""
    from edgetl.train import TrainConfig, finetune

    out = tmp_path_factory.mktemp("runs") / "lite0"
    summary = finetune(TrainConfig(data=str(digits_dir), model="efficientnet_lite0", out=str(out), epochs=3,
                                   img_size=32, batch_size=16, lr=0.003, backbone_lr_mult=1.0, augment="none",
                                   strategy="finetune", seed=1))
    return summary


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory) -> dict:
    """Every registered format in fp32 and int8 from the shared run (no gate: measured, never refused)."""
    from edgetl.export import FORMATS, ExportSettings, export_run

    out = tmp_path_factory.mktemp("export") / "export"
    return export_run(trained_run["run_dir"], list(FORMATS), ["fp32", "int8"],
                      ExportSettings(calib_size=32, max_drop=None), out=out)


def artifact(exported: dict, fmt: str, precision: str) -> dict:
    return next(r for r in exported["artifacts"] if r["format"] == fmt and r["precision"] == precision)


@pytest.fixture(scope="session")
def x86_bundle(exported, tmp_path_factory) -> Path:
    """A linux-x86 bundle of the shared run's ONNX fp32 artifact, with every wheel it needs."""
    from edgetl.deploy.bundle import build_bundle
    from edgetl.deploy.profiles import get_profile

    out = tmp_path_factory.mktemp("bundles") / "x86"
    build_bundle(Path(artifact(exported, "onnx", "fp32")["path"]), get_profile("linux-x86"), out, samples=10)
    return out


def variant(bundle: Path, tmp_path: Path, release: str) -> Path:
    """The same bundle under another release id (a 'new version' for the device)."""
    import shutil

    from edgetl.deploy.bundle import MANIFEST

    copy = tmp_path / release
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["bundle"] = release
    (copy / MANIFEST).write_text(json.dumps(manifest))
    resign(copy)
    return copy


def resign(bundle: Path, sign: bool = True) -> None:
    """SHA256SUMS recomputed for every file and (`sign`) signed again with the test run's key: what the
    bundle's builder does for a new version (an attacker without the key can recompute, not sign)."""
    from edgetl.contract.sidecar import sha256_file
    from edgetl.deploy.bundle import CHECKSUMS
    from edgetl.deploy.signing import SIGNATURE, sign_bundle

    listed = [line.split("  ", 1)[1] for line in (bundle / CHECKSUMS).read_text().splitlines()]
    (bundle / CHECKSUMS).write_text("".join(f"{sha256_file(bundle / name)}  {name}\n" for name in listed))
    if sign and (bundle / SIGNATURE).is_file():
        sign_bundle(bundle)
