"""A Raspberry Pi bundle installed and self-tested on aarch64: a Debian bookworm arm64 userland
(Raspberry Pi OS's base, Python 3.11, glibc 2.36) run here under qemu-user through chroot.

`scripts/arm64_rootfs.sh` builds the userland once and caches it; this test follows the README's
offline procedure in it as a Pi user would (the unpacked bundle copied onto the device, then
`sh bundle/install.sh --root /opt/edgetl`), so the bundle's aarch64 wheels, the runtime and the
golden answers are proven on arm64. Timings under emulation mean nothing and are not checked;
there is no camera and no systemd. Skipped (with the reason) unless root with the tools at hand.

The Camera Module source: the first install is a Pi without python3-picamera2 (install.sh says so in one
line, `edgetl run --source picamera2` exits 2 saying the same); then test_picamera.py's stand-in picamera2,
with a system-only module it imports and a system numpy, goes into the userland's system site-packages and
a second release is installed: its venv gets picamera2 and prctl from the system, numpy still from the
bundle's wheel, and `edgetl run --source picamera2` classifies the stand-in's frames on arm64.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import REPO, artifact, variant
from test_picamera import write_standin

pytestmark = pytest.mark.slow

SCRIPT = REPO / "scripts" / "arm64_rootfs.sh"
INSTALL_ROOT = "/opt/edgetl"
# What a login shell on the Pi has, and nothing of this process (no VIRTUAL_ENV, PYTHONPATH, TMPDIR).
# QEMU_CPU: the Pi 5's core, so programs see its features (NEON, dotprod; no SVE, no SME) and pick the
# kernels a Pi 5 runs. qemu's default `max` CPU advertises SME too, and XNNPACK's SME int8 kernels give
# wrong logits under qemu 7.2 (golden 1/4): the emulator's fault, which the self-test rightly refuses.
CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
              "LANG": "C.UTF-8", "QEMU_CPU": "cortex-a76"}
EM_AARCH64 = 183  # ELF e_machine
SYSTEM_SITE = "usr/lib/python3/dist-packages"  # Debian's system site-packages, where apt puts python3-picamera2
# install.sh's note, as `edgetl install` (and deploy) pass it on: one warning line naming the device.
NO_PICAMERA2 = ("warning: local: no Picamera2 on this system: the Camera Module source (--source picamera2) needs it: "
                "sudo apt install python3-picamera2 (USB webcams work without it)")
# /proc/cpuinfo of a Raspberry Pi 5 (BCM2712), one entry per CPU: qemu-user shows programs the host's
# x86 text, and XNNPACK's cpuinfo then crashes (with /sys) or gives up and XNNPACK is not used (without).
PI5_CPU = """processor\t: {n}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

"""


@pytest.fixture(scope="module")
def arm64_rootfs() -> Path:
    """The cached arm64 userland (built on first use: about 4-6 minutes on 2 cores)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, binfmt_misc, chroot, mount): sudo scripts/arm64_rootfs.sh, "
                    "then run this test as root")
    for tool in ("chroot", "mount", "umount"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} on PATH")
    built = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, timeout=1800)
    if built.returncode != 0:
        reason = (built.stderr.strip().splitlines() or [f"exited with {built.returncode}"])[-1]
        pytest.skip(f"no arm64 userland: {reason}")
    return Path(built.stdout.strip().splitlines()[-1])


def chroot(rootfs: Path, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["chroot", str(rootfs), *argv], env=CHROOT_ENV, capture_output=True, text=True,
                          timeout=timeout)


@contextlib.contextmanager
def booted(rootfs: Path, scratch: Path):
    """What a booted Pi has and a bare rootfs lacks: /proc (Python, pip, flock), /sys (XNNPACK's cpuinfo
    reads the CPU lists there) and a Pi 5's /proc/cpuinfo, mounted for the duration and always
    unmounted; one user of the cached userland at a time."""
    cpuinfo = scratch / "cpuinfo"
    cpuinfo.write_text("".join(PI5_CPU.format(n=n) for n in range(os.cpu_count() or 1)))
    with open(rootfs / "tmp" / ".edgetl-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        mounted: list[Path] = []
        try:
            for argv, point in ((["-t", "proc", "proc"], "proc"), (["-t", "sysfs", "sysfs"], "sys"),
                                (["--bind", str(cpuinfo)], "proc/cpuinfo")):
                subprocess.run(["mount", *argv, str(rootfs / point)], check=True, capture_output=True)
                mounted.append(rootfs / point)
            yield
        finally:
            for point in reversed(mounted):
                if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
                    subprocess.run(["umount", "-l", str(point)], capture_output=True)


@contextlib.contextmanager
def system_picamera2(rootfs: Path, scratch: Path):
    """What `apt install python3-picamera2` would add, as stand-ins: picamera2, a module only the system has
    that it imports (prctl), and the system's own numpy, which must never reach a release venv. A copy of the
    system site-packages with them is bind-mounted over it for the duration, always unmounted: the cached
    userland itself never changes."""
    site = scratch / "dist-packages"
    shutil.copytree(rootfs / SYSTEM_SITE, site, symlinks=True)
    write_standin(site)
    (site / "numpy").mkdir()
    (site / "numpy" / "__init__.py").write_text('__version__ = "0+system"  # bookworm\'s python3-numpy is 1.24\n')
    subprocess.run(["mount", "--bind", str(site), str(rootfs / SYSTEM_SITE)], check=True, capture_output=True)
    try:
        yield site
    finally:
        if subprocess.run(["umount", str(rootfs / SYSTEM_SITE)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(rootfs / SYSTEM_SITE)], capture_output=True)


def install_offline(rootfs: Path, bundle: Path, root: str) -> subprocess.CompletedProcess:
    """The README's offline install as a Pi user runs it: the unpacked bundle copied onto the device,
    then `sh bundle/install.sh --root ROOT` there (checksums, a venv from the bundled wheels with no
    index, `edgetl install`: self-test, switch)."""
    inside = f"tmp/bundle-{secrets.token_hex(4)}"
    shutil.copytree(bundle, rootfs / inside)
    try:
        return chroot(rootfs, "/bin/sh", f"/{inside}/install.sh", "--root", root, timeout=1800)
    finally:
        shutil.rmtree(rootfs / inside, ignore_errors=True)


def elf_machine(path: Path) -> int | None:
    """The ELF header's e_machine (183: aarch64, 62: x86-64); None for a file that is not ELF."""
    with open(path, "rb") as handle:
        header = handle.read(20)
    return int.from_bytes(header[18:20], "little") if header[:4] == b"\x7fELF" and len(header) == 20 else None


@pytest.mark.timeout(2400)  # a cold rootfs (~5 min), the shared export (minutes), 2 installs under qemu (~2.5 min each)
def test_rpi5_bundle_installs_and_self_tests_on_aarch64(arm64_rootfs, request, tmp_path):
    from edgetl.deploy.bundle import build_bundle
    from edgetl.deploy.profiles import get_profile
    from edgetl.deploy.selftest import self_test

    # Asked for here, not as an argument: session fixtures are set up before module ones, and a
    # machine without the userland should skip before the shared export trains anything.
    exported = request.getfixturevalue("exported")
    profile = get_profile("rpi5")
    made = {(a["format"], a["precision"]) for a in exported["artifacts"]}
    target = next(t for t in profile.targets if (t.format, t.precision) in made)
    chosen = artifact(exported, target.format, target.precision)
    assert (chosen["format"], chosen["precision"]) == ("tflite", "int8")  # what rpi5 prefers
    manifest = build_bundle(Path(chosen["path"]), profile, tmp_path / "bundle", samples=16)
    release = manifest["bundle"]
    root = arm64_rootfs / INSTALL_ROOT.lstrip("/")
    current = f"{INSTALL_ROOT}/current"
    with booted(arm64_rootfs, tmp_path):
        shutil.rmtree(root, ignore_errors=True)  # a fresh Pi: nothing an earlier run left
        try:
            machine = chroot(arm64_rootfs, "/bin/sh", "-c", "uname -m; python3.11 -c 'import platform; "
                             "print(platform.machine())'")
            started = time.monotonic()
            installed = install_offline(arm64_rootfs, tmp_path / "bundle", INSTALL_ROOT)
            seconds = time.monotonic() - started
            link = os.readlink(root / "current") if (root / "current").is_symlink() else None
            state = json.loads((root / "state.json").read_text()) if (root / "state.json").is_file() else {}
            leftovers = sorted(p.name for p in (root / "releases").glob("*.partial"))
            report = chroot(arm64_rootfs, f"{current}/venv/bin/python", "-m", "edgetl", "selftest", current,
                            "--json", "--quiet", "--runs", "5")
            venv = chroot(arm64_rootfs, f"{current}/venv/bin/python", "-c",
                          "import platform, sys, ai_edge_litert; print(platform.machine(), sys.version.split()[0])")
            native = {p: elf_machine(p) for p in (root / "current" / "venv").rglob("*.so*") if p.is_file()}
            native = {p: machine_id for p, machine_id in native.items() if machine_id is not None}
            foreign = sorted(p.name for p, machine_id in native.items() if machine_id != EM_AARCH64)
            # The same release, same files, on this x86 host: what the arm64 answers are compared with.
            host = self_test(root / "current", runs=5) if link else None
            # This Pi has no python3-picamera2: the Camera Module source says so, in one line.
            no_camera = chroot(arm64_rootfs, f"{current}/venv/bin/python", "-m", "edgetl", "run", f"{current}/model",
                               "--source", "picamera2", "--max-frames", "3")
            # python3-picamera2 installed since: the next release's venv takes it from the system.
            later = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + release.split("-")[2] + "-camera"
            upgrade = variant(tmp_path / "bundle", tmp_path, later)
            with system_picamera2(arm64_rootfs, tmp_path / "system"):
                upgraded = install_offline(arm64_rootfs, upgrade, INSTALL_ROOT)
                camera = chroot(arm64_rootfs, f"{current}/venv/bin/python", "-m", "edgetl", "run", f"{current}/model",
                                "--source", "picamera2", "--max-frames", "3", "--json-lines")
                imported = chroot(arm64_rootfs, f"{current}/venv/bin/python", "-c",
                                  "import json, sys, numpy, picamera2, prctl; print(json.dumps([numpy.__version__, "
                                  "numpy.__file__, picamera2.__file__, prctl.__file__, sys.path]))")
                folder = root / "current" / "venv" / "system-camera"
                linked = sorted(p.name for p in folder.iterdir() if p.is_symlink()) if folder.is_dir() else []
                pth = [p.read_text() for p in (root / "current" / "venv").glob("lib/python3*/site-packages/*.pth")
                       if p.name == "edgetl-system-camera.pth"]
        finally:
            shutil.rmtree(root, ignore_errors=True)

    # It really ran on arm64: the kernel's answer through qemu, Python's, and the release venv's.
    assert machine.returncode == 0 and machine.stdout.split() == ["aarch64", "aarch64"], machine.stderr
    assert installed.returncode == 0, (installed.stdout + installed.stderr)[-3000:]
    said = installed.stdout + installed.stderr
    line = re.search(r"installed (\S+) under (\S+): self-test passed \(golden (\d+)/(\d+)", said)
    assert line and line.group(1) == release and line.group(2) == INSTALL_ROOT, said[-2000:]
    assert line.group(3) == line.group(4) and int(line.group(4)) > 0, said[-2000:]
    assert link == f"releases/{release}" and state.get("current") == release
    assert leftovers == []
    assert venv.returncode == 0, venv.stderr[-2000:]
    assert venv.stdout.split()[0] == "aarch64" and venv.stdout.split()[1].startswith("3.11."), venv.stdout
    assert native and not foreign, foreign  # every native extension pip installed is aarch64
    # The self-test inside the arm64 userland: golden samples reproduce the export host's top-1.
    assert report.returncode == 0, report.stderr[-2000:]
    assert "XNNPACK delegate" in report.stderr, report.stderr[-2000:]  # the kernels a Pi runs, not a fallback
    arm = json.loads(report.stdout)
    assert arm["passed"] and arm["integrity"]["passed"], arm.get("reason")
    golden = arm["golden"]
    assert golden["passed"] and golden["matched"] == golden["total"] > 0, golden
    assert arm["samples"] == manifest["samples"] == 16
    # XNNPACK's NEON and x86 int8 kernels need not round alike (here they agree to the last digit), so one
    # borderline held-out image may flip; a wrong runtime or preprocessing moves far more than that.
    assert abs(arm["accuracy"] - host["accuracy"]) <= 1 / arm["samples"] + 1e-9, (arm["accuracy"], host["accuracy"])
    errors = [s["max_logit_error"] for s in golden["samples"]]
    print(f"aarch64: golden {golden['matched']}/{golden['total']} (max logit error {max(errors):.4f}, "
          f"x86 {max(s['max_logit_error'] for s in host['golden']['samples']):.4f}), accuracy {arm['accuracy']:.3f} "
          f"(x86 {host['accuracy']:.3f}) on {arm['samples']} held-out images; install under qemu {seconds:.0f} s "
          "(timings under emulation mean nothing)")

    # No Picamera2: install.sh says so in one line and the install goes on; `edgetl run` exits 2 naming it.
    assert [line for line in said.splitlines() if "Picamera2" in line] == [NO_PICAMERA2], said[-2000:]
    errors = [line for line in no_camera.stderr.splitlines() if line.startswith("error:")]
    assert no_camera.returncode == 2 and "Traceback" not in no_camera.stderr, no_camera.stderr[-2000:]
    assert len(errors) == 1 and "python3-picamera2" in errors[0], no_camera.stderr[-2000:]
    # With the system's Picamera2: linked into the new release's venv, which classifies its frames.
    upgrade_said = upgraded.stdout + upgraded.stderr
    assert upgraded.returncode == 0 and f"installed {later} under {INSTALL_ROOT}" in upgrade_said, upgrade_said[-3000:]
    assert [line for line in upgrade_said.splitlines() if "Picamera2" in line] == [], upgrade_said[-2000:]
    assert camera.returncode == 0, camera.stderr[-2000:]
    lines = [json.loads(line) for line in camera.stdout.splitlines()]
    assert len(lines) == 4 and all(f["source"] == "picamera2 camera 0" for f in lines[:-1]), camera.stdout[-2000:]
    assert lines[-1]["summary"]["frames"] == 3 and lines[-1]["summary"]["frame_size"] == [640, 480]
    # Only what the venv lacks comes from the system: picamera2 and prctl, never numpy, and after the venv's own.
    assert linked == ["picamera2", "prctl.py"], linked
    assert pth == ["../../../system-camera\n"], pth
    assert imported.returncode == 0, imported.stderr[-2000:]
    numpy_version, numpy_file, picamera2_file, prctl_file, path = json.loads(imported.stdout)
    assert numpy_version.startswith("1.") and "/venv/lib/python3.11/site-packages/numpy/" in numpy_file, numpy_file
    assert picamera2_file.endswith("/venv/system-camera/picamera2/__init__.py") and prctl_file.endswith(
        "/venv/system-camera/prctl.py"), (picamera2_file, prctl_file)
    venv_site = next(i for i, entry in enumerate(path) if entry.endswith("/venv/lib/python3.11/site-packages"))
    assert path.index(next(e for e in path if e.endswith("/venv/system-camera"))) > venv_site, path
    assert not any("dist-packages" in entry for entry in path), path  # the venv stays isolated
    print(f"aarch64 Camera Module: 3 frames through the system's Picamera2 (stand-in), numpy {numpy_version} "
          "from the bundle")
