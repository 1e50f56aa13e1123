"""What is never lost: kill -9 at every deploy step, two deploys at once, torn state, careless paths.

Every deploy here is real (`edgetl install` in a subprocess: a venv from the bundled wheels with
no index, the on-device self-test), and every crash is a real SIGKILL of that process at a
named step (EDGETL_FAULT_AT).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import resign, run_cli, variant
from edgetl import atomic
from edgetl.contract.sidecar import sha256_file
from edgetl.deploy.local import LocalDevice, current_release, install_release, read_state, releases
from edgetl.deploy.rollback import rollback
from edgetl.deploy.lock import device_lock
from edgetl.errors import BadInputError, CheckFailedError

pytestmark = pytest.mark.slow


def _install(bundle: Path, root: Path, fault: str | None = None, env: dict | None = None):
    full = {**os.environ, **(env or {})}
    if fault:
        full["EDGETL_FAULT_AT"] = fault
    return subprocess.run([sys.executable, "-m", "edgetl", "install", str(bundle), "--root", str(root), "--json"],
                          capture_output=True, text=True, env=full, timeout=900)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "releases").glob("*.partial"))


def test_kill_9_at_every_step_leaves_a_serving_release(x86_bundle, tmp_path):
    root = tmp_path / "device"
    first = install_release(variant(x86_bundle, tmp_path, "20260101-000000-v1"), root)
    assert first["self_test"]["passed"] and current_release(root) == "20260101-000000-v1"
    (root / "releases" / "notes.txt").write_text("mine")  # not releases: pruning must keep them
    (root / "releases" / "scratch").mkdir()

    # Killed before the switch: the previous release keeps serving, no partial is a release.
    for number, step in enumerate(("uploaded", "installed", "self-tested"), start=2):
        release = f"20260101-00000{number}-v{number}"
        killed = _install(variant(x86_bundle, tmp_path, release), root, fault=step)
        assert killed.returncode == -9, killed.stderr[-2000:]
        assert current_release(root) == "20260101-000000-v1"
        assert _leftovers(root) == [f"{release}.partial"]  # the one just killed; older ones were cleaned
        assert release not in releases(LocalDevice(), str(root))
        assert (root / "current" / "venv" / "bin" / "python").exists()

    # Killed after the rename but before the switch: complete and tested, not current.
    killed = _install(variant(x86_bundle, tmp_path, "20260101-000005-v5"), root, fault="finalized")
    assert killed.returncode == -9 and current_release(root) == "20260101-000000-v1"
    assert _leftovers(root) == []

    # Killed between the switch and state.json: the new release serves; rollback knows the old one.
    killed = _install(variant(x86_bundle, tmp_path, "20260101-000006-v6"), root, fault="switched")
    assert killed.returncode == -9 and current_release(root) == "20260101-000006-v6"
    assert read_state(LocalDevice(), str(root))["current"] == "20260101-000000-v1"
    back = rollback(root)
    assert back["release"] == "20260101-000000-v1" and current_release(root) == "20260101-000000-v1"

    # A torn state.json does not stop the next deploy (the `current` link is the truth).
    (root / "state.json").write_text('{"current": "2026')
    done = _install(variant(x86_bundle, tmp_path, "20260101-000007-v7"), root)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["previous_release"] == "20260101-000000-v1" and current_release(root) == "20260101-000007-v7"
    assert first["environment"] == "built" and result["environment"] == "copied"  # the same wheels as v1's
    assert json.loads((root / "state.json").read_text())["current"] == "20260101-000007-v7"
    assert (root / "releases" / "notes.txt").read_text() == "mine" and (root / "releases" / "scratch").is_dir()
    kept = releases(LocalDevice(), str(root))
    assert kept == ["20260101-000000-v1", "20260101-000005-v5", "20260101-000006-v6", "20260101-000007-v7"]
    # (the 3 newest, and the previous release, protected however old)
    # The unit is written for where the release was installed.
    unit = (root / "edgetl.service").read_text()
    assert f'ExecStart="{root}/current/venv/bin/python" "-m" "edgetl" "run" "{root}/current/model"' in unit
    assert '"--serve-host" "0.0.0.0" "--serve-token-file" "/var/lib/edgetl/serve-token"' in unit
    assert "StateDirectory=edgetl" in unit

    # Rollback checks its target first: a corrupted previous release is refused, current stays.
    model = root / "releases" / "20260101-000000-v1" / "model" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-64])
    with pytest.raises(CheckFailedError, match="refusing to roll back to 20260101-000000-v1: checksum mismatch"):
        rollback(root)
    assert current_release(root) == "20260101-000007-v7"


def test_a_second_deploy_while_one_holds_the_lock_fails_in_one_line(x86_bundle, tmp_path):
    root = tmp_path / "device"
    root.mkdir()
    with device_lock(LocalDevice(), str(root)):
        with pytest.raises(CheckFailedError, match="another deploy or rollback is at work"):
            install_release(variant(x86_bundle, tmp_path, "20260201-000000-a"), root)
        busy = run_cli("deploy", "--rollback", "--local", str(root))
        assert busy.returncode == 1 and "another deploy or rollback" in busy.stderr
        assert "Traceback" not in busy.stderr
    assert not (root / "releases").exists() or _leftovers(root) == []
    # The lock went with its holder: the next deploy proceeds (it fails later, for its own reason).
    with pytest.raises(BadInputError, match="no current release"):
        rollback(root)


SYSTEMCTL = """#!{python}
# A stand-in for systemctl (systemd cannot run here) that runs the real service: `restart` starts the unit's
# own ExecStart (unquoted as systemd does) in the background, after stopping the one it started before. The
# live page goes to loopback and a free port, so parallel tests do not collide. A release listed in
# ROOT.failing fails its restart the way systemd reports it.
import os, shlex, signal, subprocess, sys
from pathlib import Path
root = Path({root!r})
pidfile, log = root.parent / (root.name + ".service-pid"), root.parent / (root.name + ".service-log")
command = sys.argv[1] if len(sys.argv) > 1 else ""
if command == "show":
    print(0)  # NRestarts: the stand-in never restarts by itself
if command != "restart":
    sys.exit(0)
failing = root.parent / (root.name + ".failing")
if failing.exists() and os.path.basename(os.readlink(root / "current")) in failing.read_text().split():
    sys.exit("Job for edgetl.service failed because the control process exited with error code.")
if pidfile.exists():
    try:
        os.killpg(int(pidfile.read_text()), signal.SIGKILL)
    except ProcessLookupError:
        pass
line = next(l for l in (root / "edgetl.service").read_text().splitlines() if l.startswith("ExecStart="))
argv = [part.replace("%%", "%").replace("$$", "$") for part in shlex.split(line[len("ExecStart="):])]
swap = {{"--serve": "0", "--serve-host": "127.0.0.1", "--serve-token-file": str(root.parent / "serve-token")}}
argv = [swap.get(argv[i - 1], part) if i else part for i, part in enumerate(argv)]
process = subprocess.Popen(argv, cwd=root / "current", stdout=subprocess.DEVNULL, stderr=open(log, "a"),
                           start_new_session=True)
pidfile.write_text(str(process.pid))
"""


def _systemd_stand_in(tmp_path: Path, root: Path) -> Path:
    """A folder to put first on PATH: its `systemctl` runs the unit's own command line for real."""
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "systemctl").write_text(SYSTEMCTL.format(python=sys.executable, root=str(root)))
    (shims / "systemctl").chmod(0o755)
    return shims


def _stop_service(root: Path) -> None:
    import signal

    pidfile = root.parent / (root.name + ".service-pid")
    if pidfile.exists():
        try:
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


def service_variant(bundle: Path, tmp_path: Path, release: str, root: Path, source: str | None = None,
                    window_s: float = 60) -> Path:
    """A release whose service classifies `source` (default: its own bundled samples, a folder of photos)
    with a health window and heartbeat of the test's."""
    from edgetl.deploy.bundle import MANIFEST

    copy = variant(bundle, tmp_path, release)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["profile"]["camera"]["source"] = source or f"{root}/current/samples"
    manifest["profile"]["health"] = {"window_s": window_s, "min_frames": 3, "heartbeat": str(tmp_path / "beat.json")}
    (copy / MANIFEST).write_text(json.dumps(manifest))
    resign(copy)
    return copy


def test_a_failed_restart_is_recorded_bad_and_rollback_goes_to_the_last_known_good(x86_bundle, tmp_path,
                                                                                     monkeypatch):
    root = tmp_path / "device"
    monkeypatch.setenv("PATH", f"{_systemd_stand_in(tmp_path, root)}:{os.environ['PATH']}")
    (root.parent / f"{root.name}.failing").write_text("20260301-000002-bad\n")
    ids = ["20260301-000000-ok1", "20260301-000001-ok2", "20260301-000002-bad"]
    try:
        _known_good_and_bad(x86_bundle, tmp_path, root, ids)
    finally:
        _stop_service(root)


def _known_good_and_bad(x86_bundle: Path, tmp_path: Path, root: Path, ids: list[str]) -> None:
    for release in ids[:2]:
        service = install_release(service_variant(x86_bundle, tmp_path, release, root), root)["service"]
        assert service.startswith("restarted, healthy in"), service
    failed = _install(service_variant(x86_bundle, tmp_path, ids[2], root), root)
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert "did not restart" in failed.stderr and f"switched back to {ids[1]}" in failed.stderr
    assert current_release(root) == ids[1]
    state = read_state(LocalDevice(), str(root))
    assert state["current"] == ids[1] and state["bad"] == [ids[2]] and state["good"] == ids[:2]
    assert ids[2] in releases(LocalDevice(), str(root))  # kept on disk, for its logs

    # The failed release is the newest one on disk; rollback passes over it to the last good one.
    back = rollback(root)
    assert back["release"] == ids[0] and back["previous_release"] == ids[1] and current_release(root) == ids[0]

    # A rollback whose restart fails is a failed rollback: non-zero, the device back on what served.
    (root.parent / f"{root.name}.failing").write_text(f"{ids[2]}\n{ids[1]}\n")
    with pytest.raises(CheckFailedError, match=f"rollback to {ids[1]} failed .*switched back to {ids[0]}"):
        rollback(root)
    assert current_release(root) == ids[0]
    assert read_state(LocalDevice(), str(root))["bad"] == [ids[2], ids[1]]
    refused = run_cli("deploy", "--rollback", "--local", str(root))
    assert refused.returncode == 2 and "no earlier release known to be good" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and current_release(root) == ids[0]

    # No silent downgrade: a (validly signed) bundle built before the current release is refused first.
    older = service_variant(x86_bundle, tmp_path, "20260201-000000-older", root)
    with pytest.raises(BadInputError, match="built before 20260301-000000-ok1, the current release .*refusing to "
                                            "downgrade"):
        install_release(older, root)
    assert current_release(root) == ids[0] and "20260201-000000-older" not in releases(LocalDevice(), str(root))
    assert not (root / "releases" / "20260201-000000-older.partial").exists()


def test_offline_install_verifies_then_builds_the_deploy_layout(x86_bundle, tmp_path):
    from edgetl.deploy.bundle import pack

    archive = pack(variant(x86_bundle, tmp_path, "20260401-000000-offline"), tmp_path / "offline.tar.gz")
    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    bundle = unpacked / "bundle"
    env = {**os.environ, "PYTHON": sys.executable}

    def copy(name: str) -> Path:
        subprocess.run(["cp", "-a", str(bundle), str(tmp_path / name)], check=True)
        return tmp_path / name

    def install_sh(folder: Path, root: Path, *flags: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(folder / "install.sh"), "--root", str(root), *flags], capture_output=True,
                              text=True, env=env, timeout=900)

    corrupt = copy("corrupt")
    (corrupt / "samples" / "labels.json").write_text("{}")
    refused = install_sh(corrupt, tmp_path / "never")
    assert refused.returncode == 1 and "differ from SHA256SUMS" in refused.stderr
    # The same change with SHA256SUMS recomputed, as someone without the signing key would: the signature
    # no longer matches. Nothing ran before either check, and no key was trusted.
    tampered = copy("tampered")
    (tampered / "samples" / "labels.json").write_text("{}")
    resign(tampered, sign=False)
    refused = install_sh(tampered, tmp_path / "never")
    assert refused.returncode == 1 and "signature of SHA256SUMS does not verify" in refused.stderr
    unsigned = copy("unsigned")
    (unsigned / "SHA256SUMS.sig").unlink()
    refused = install_sh(unsigned, tmp_path / "never")
    assert refused.returncode == 1 and "not signed: refusing it" in refused.stderr and "--allow-unsigned" in refused.stderr
    (unsigned / "samples" / "labels.json").write_text("{}")  # past the signature with the flag, still checksummed
    refused = install_sh(unsigned, tmp_path / "never", "--allow-unsigned")
    assert "UNSIGNED bundle" in refused.stderr and "differ from SHA256SUMS" in refused.stderr
    assert not (tmp_path / "never").exists()

    root = tmp_path / "opt-edgetl"
    done = subprocess.run(["sh", str(bundle / "install.sh"), "--root", str(root)], capture_output=True, text=True,
                          env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert current_release(root) == "20260401-000000-offline"
    assert (root / "current" / "venv" / "bin" / "python").exists() and (root / "edgetl.service").is_file()
    assert json.loads((root / "state.json").read_text())["current"] == "20260401-000000-offline"
    # pip ran once: the release's environment is a copy of the one install.sh built to run edgetl with.
    assert done.stdout.count("environment built from the bundled wheels") == 1, done.stdout
    # The first offline install trusted the bundle's signer; a bundle signed by another key is refused.
    assert "now trusts key" in done.stderr and len(list((root / "trusted-keys").glob("*.pem"))) == 1
    stranger = copy("stranger")
    resign_as = ("import sys; from pathlib import Path; from edgetl.deploy import signing; b = Path(sys.argv[1]); "
                 "(b / signing.SIGNER).write_text(signing.public_key()['public_pem'])")
    subprocess.run([sys.executable, "-c", resign_as, str(stranger)], check=True,
                   env={**env, "EDGETL_CONFIG_DIR": str(tmp_path / "someone-else")})
    resign(stranger, sign=False)
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from edgetl.deploy.signing import "
                    "sign_bundle; sign_bundle(Path(sys.argv[1]))", str(stranger)], check=True,
                   env={**env, "EDGETL_CONFIG_DIR": str(tmp_path / "someone-else")})
    refused = install_sh(stranger, root)
    assert refused.returncode == 1 and "which " + str(root) + " does not trust" in refused.stderr, refused.stderr
    assert current_release(root) == "20260401-000000-offline"


def test_edgetl_replaces_only_folders_it_made(tmp_path):
    pictures = tmp_path / "Pictures"
    pictures.mkdir()
    (pictures / "holiday.jpg").write_bytes(b"not really a jpeg, but mine")
    result = run_cli("demo-data", str(pictures))
    assert result.returncode == 2 and "was not made by edgetl" in result.stderr and "Traceback" not in result.stderr
    assert (pictures / "holiday.jpg").read_bytes() == b"not really a jpeg, but mine"

    made = run_cli("demo-data", str(tmp_path / "digits"), "--per-class", "2", "--size", "16", check=True)
    assert made.returncode == 0 and atomic.made_by_edgetl(tmp_path / "digits")
    again = run_cli("demo-data", str(tmp_path / "digits"), "--per-class", "3", "--size", "16", check=True)
    assert again.returncode == 0 and len(list((tmp_path / "digits" / "zero").iterdir())) == 3

    demo_out = tmp_path / "demo"
    (demo_out / "run").mkdir(parents=True)
    (demo_out / "run" / "thesis.tex").write_text("years of work")
    refused = run_cli("demo", "--out", str(demo_out), "--epochs", "1")
    assert refused.returncode == 2 and "was not made by edgetl" in refused.stderr
    assert (demo_out / "run" / "thesis.tex").read_text() == "years of work"


def test_atomic_dir_recovers_a_crash_between_its_two_renames(tmp_path):
    target = tmp_path / "artifact"
    with atomic.atomic_dir(target, kind="artifact") as tmp:
        (tmp / "model.onnx").write_bytes(b"v1")
    # What the two-rename fallback leaves when killed between the renames: no target, the old one aside.
    aside = tmp_path / ".artifact.old-k1ll3d"
    os.replace(target, aside)
    dead = tmp_path / ".artifact.999999999.x.partial"  # a writer that no longer runs
    dead.mkdir()
    alive = tmp_path / f".artifact.{os.getpid()}.y.partial"  # ours: another writer at work, kept
    alive.mkdir()
    atomic.recover_dir(target)
    assert (target / "model.onnx").read_bytes() == b"v1" and not aside.exists()
    assert not dead.exists() and alive.exists()
    with atomic.atomic_dir(target, kind="artifact") as tmp:
        (tmp / "model.onnx").write_bytes(b"v2")
    assert (target / "model.onnx").read_bytes() == b"v2" and atomic.made_by_edgetl(target)
    assert not list(tmp_path.glob(".artifact.old-*"))

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    with pytest.raises(BadInputError, match="not made by edgetl"):
        with atomic.atomic_dir(mine, kind="artifact"):
            raise AssertionError("must refuse before any work")
    assert (mine / "keep.txt").read_text() == "x"


def test_two_exports_into_one_folder_do_not_corrupt_each_other(trained_run, tmp_path):
    from edgetl.contract.sidecar import Sidecar, verify_files

    out = tmp_path / "export"
    (out / ".export-work-999999999-abc").mkdir(parents=True)  # a killed export's scratch
    command = [sys.executable, "-m", "edgetl", "export", trained_run["run_dir"], "--format", "onnx",
               "--precision", "fp32", "--out", str(out), "--json"]
    first, second = (subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2))
    for process in (first, second):
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-2000:]
    folder = out / "onnx-fp32"
    assert verify_files(folder, Sidecar.read(folder)) == [] and atomic.made_by_edgetl(folder)
    assert sorted(p.name for p in out.iterdir()) == ["onnx-fp32"]  # no scratch, no .partial, no .old left


def test_generated_scripts_and_units_quote_every_value(tmp_path):
    """install.sh, build_engine.sh and the unit embed values; none of them is ever code."""
    import dataclasses

    from edgetl.deploy.bundle import engine_script
    from edgetl.deploy.profiles import get_profile
    from edgetl.deploy.service import plain_path, service_unit, systemd_quote

    profile = dataclasses.replace(get_profile("jetson-orin-nano"),
                                  tensorrt={"build": "printf '%s\\n' {model} {engine}", "engine_cache": "trt cache"})
    hostile = "a b;$(touch pwned)`touch pwned2`.onnx"
    release = tmp_path / "release with space"
    (release / "model").mkdir(parents=True)
    (release / "build_engine.sh").write_text(engine_script(profile, hostile))
    ran = subprocess.run(["sh", str(release / "build_engine.sh")], capture_output=True, text=True, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [f"{release}/model/{hostile}", f"{release}/model/trt cache/model.engine"]
    assert not list(tmp_path.rglob("pwned*")) and (release / "model" / "trt cache").is_dir()
    # text around a placeholder is part of the same word: quoted too
    glued = dataclasses.replace(profile, tensorrt={"build": "printf '%s\\n' --onnx=`id`$(id)$HOME{model}"})
    (release / "build_engine.sh").write_text(engine_script(glued, "m.onnx"))
    ran = subprocess.run(["sh", str(release / "build_engine.sh")], capture_output=True, text=True, cwd=tmp_path)
    assert ran.stdout.splitlines() == [f"--onnx=`id`$(id)$HOME{release}/model/m.onnx"], ran.stdout + ran.stderr
    assert not list(tmp_path.rglob("pwned*"))

    assert systemd_quote('rtsp://cam/a b"%$x') == '"rtsp://cam/a b\\"%%$$x"'
    with pytest.raises(BadInputError, match="line break"):
        systemd_quote("0\nExecStartPre=/bin/rm -rf /")
    for bad in ("relative/path", "/opt/my dir", "/opt/../etc", "/opt/$(id)", "/opt/x\n"):
        with pytest.raises(BadInputError, match="absolute path of letters"):
            plain_path(bad)
    camera = {**get_profile("rpi5").to_dict(), "camera": {"pipeline": "v4l2", "source": "rtsp://cam/%i $HOME"}}
    unit = service_unit(camera, "/opt/edgetl")
    assert '"--source" "rtsp://cam/%%i $$HOME"' in unit
    with pytest.raises(BadInputError, match="not a plain user name"):
        service_unit({**camera, "service_user": "root\nExecStartPre=/bin/sh"}, "/opt/edgetl")


def test_a_release_whose_service_never_becomes_healthy_is_switched_back_and_never_rolled_back_to(
        x86_bundle, tmp_path, monkeypatch):
    """The self-test passes (the model is fine) but the service cannot open its camera: no heartbeat
    within the window, so the deploy switches back, records it bad, and --rollback passes over it."""
    root = tmp_path / "device"
    monkeypatch.setenv("PATH", f"{_systemd_stand_in(tmp_path, root)}:{os.environ['PATH']}")
    try:
        good = install_release(service_variant(x86_bundle, tmp_path, "20260501-000000-good", root), root)
        assert good["service"].startswith("restarted, healthy"), good["service"]
        beat = json.loads((tmp_path / "beat.json").read_text())
        assert beat["model"].endswith("/releases/20260501-000000-good/model") and beat["frames"] >= 3
        blind = service_variant(x86_bundle, tmp_path, "20260501-000001-blind", root, source="/dev/edgetl-no-camera",
                                window_s=8)
        with pytest.raises(CheckFailedError, match=r"did not prove healthy .*unhealthy: the service .* within 8 s\); "
                                                   "switched back to 20260501-000000-good"):
            install_release(blind, root)
        assert current_release(root) == "20260501-000000-good"
        state = read_state(LocalDevice(), str(root))
        assert state["bad"] == ["20260501-000001-blind"] and state["good"] == ["20260501-000000-good"]
        with pytest.raises(BadInputError, match="no earlier release known to be good .*20260501-000001-blind failed"):
            rollback(root)
    finally:
        _stop_service(root)


def test_the_deploy_lock_is_held_once_per_connection_and_refuses_everyone_else(tmp_path):
    """`--pick` holds the lock across every candidate's install and the switch (each install takes it again
    on the same connection); another deploy, on another connection, is refused throughout."""
    root = tmp_path / "device"
    root.mkdir()
    picking, other = LocalDevice(), LocalDevice()
    with device_lock(picking, str(root)):
        with device_lock(picking, str(root)):  # a candidate's install inside the pick
            with pytest.raises(CheckFailedError, match="another deploy or rollback is at work"):
                with device_lock(other, str(root)):
                    pass
        with pytest.raises(CheckFailedError, match="another deploy or rollback is at work"):  # still held
            with device_lock(other, str(root)):
                pass
    with device_lock(other, str(root)):  # released at the end of the pick
        pass
