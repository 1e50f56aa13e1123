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

    if os.environ.get("PYTEST_XDIST_TESTRUNUID"):  # one key for all workers: they share the bundles they sign
        import fcntl

        config = Path(tempfile.gettempdir()) / f"edgetl-test-config-{os.environ['PYTEST_XDIST_TESTRUNUID']}"
        config.mkdir(mode=0o700, exist_ok=True)
        os.environ["EDGETL_CONFIG_DIR"] = str(config)
        with open(config / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # made once, before any worker signs
            from edgetl.deploy.signing import init_key

            init_key()
    else:
        os.environ["EDGETL_CONFIG_DIR"] = tempfile.mkdtemp(prefix="edgetl-test-config-")


# The files that take longest, run first: the two xdist workers (--dist loadfile hands out whole files in
# collection order) then end together instead of one waiting minutes for the other's last long file.
LONGEST_FIRST = ("test_demo", "test_tflite_metadata", "test_qat", "test_gpu_check", "test_aarch64",
                 "test_quantization", "test_mender", "test_export", "test_speed_gate", "test_release_safety",
                 "test_deploy", "test_runtime", "test_pick")


def pytest_collection_modifyitems(items: list) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: in-file order kept


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


def shared(tmp_path_factory, name: str, build):
    """`build(folder)` once per test run, whichever xdist worker asks first; the other waits for it and
    gets the same (pickled) result. The session's costliest fixtures (a fine-tune, every export, a bundle
    with its wheels) were built once per worker before: minutes of the suite on 2 cores. What they make
    is read, never changed, by the tests (a test that changes one works on its own copy)."""
    import fcntl
    import pickle

    base = tmp_path_factory.getbasetemp()
    runs = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # pytest-N/, shared by the workers
    folder, done = runs / f"shared-{name}", runs / f"shared-{name}.pickle"
    with open(runs / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file():
            return pickle.loads(done.read_bytes())
        if folder.exists():  # a build that failed or was killed: start again
            import shutil

            shutil.rmtree(folder)
        folder.mkdir()
        result = build(folder)
        done.write_bytes(pickle.dumps(result))
        return result


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """Ten classes of real handwritten digits, 16 each, 32 px: small enough to train in seconds."""
    from edgetl.data.demo import write_demo_data

    def build(folder: Path) -> Path:
        write_demo_data(folder / "digits", per_class=16, size=32)
        return folder / "digits"

    return shared(tmp_path_factory, "digits", build)


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory, digits_dir) -> dict:
    """A short real fine-tune of pretrained EfficientNet-Lite0, made once per test run; never written to."""
    from edgetl.train import TrainConfig, finetune

    return shared(tmp_path_factory, "lite0", lambda folder: finetune(TrainConfig(
        data=str(digits_dir), model="efficientnet_lite0", out=str(folder / "lite0"), epochs=3, img_size=32,
        batch_size=16, lr=0.003, backbone_lr_mult=1.0, augment="none", strategy="finetune", seed=1)))


@pytest.fixture(scope="session")
def trained_run(shared_run, tmp_path_factory) -> dict:
    """This worker's copy of the shared run: tests export, fine-tune and write parity reports into it."""
    import shutil

    copy = tmp_path_factory.mktemp("runs") / "lite0"
    shutil.copytree(shared_run["run_dir"], copy)
    return json.loads(json.dumps(shared_run).replace(json.dumps(shared_run["run_dir"])[1:-1],
                                                     json.dumps(str(copy))[1:-1]))


@pytest.fixture(scope="session")
def exported(shared_run, tmp_path_factory) -> dict:
    """Every registered format in fp32 and int8 from the shared run (no gate: measured, never refused)."""
    from edgetl.export import FORMATS, ExportSettings, export_run

    return shared(tmp_path_factory, "export", lambda folder: export_run(
        shared_run["run_dir"], list(FORMATS), ["fp32", "int8"], ExportSettings(calib_size=32, max_drop=None),
        out=folder / "export"))


def artifact(exported: dict, fmt: str, precision: str) -> dict:
    return next(r for r in exported["artifacts"] if r["format"] == fmt and r["precision"] == precision)


@pytest.fixture(scope="session")
def x86_bundle(exported, tmp_path_factory) -> Path:
    """A linux-x86 bundle of the shared run's ONNX fp32 artifact, with every wheel it needs."""
    from edgetl.deploy.bundle import build_bundle
    from edgetl.deploy.profiles import get_profile

    def build(folder: Path) -> Path:
        build_bundle(Path(artifact(exported, "onnx", "fp32")["path"]), get_profile("linux-x86"), folder / "x86",
                     samples=10)
        return folder / "x86"

    return shared(tmp_path_factory, "x86-bundle", build)


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
