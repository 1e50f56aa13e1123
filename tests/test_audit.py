"""The audit's medium findings 1, 2, 4 and 6 (issue 30), each against real files, tarballs and a real Console.

Hand-made artifact folders and bundles without wheels keep these tests to seconds: nothing is trained,
exported or downloaded.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from conftest import run_cli
from edgetl import atomic
from edgetl.contract.preprocess import Preprocess
from edgetl.contract.sidecar import Sidecar, TensorInfo, sha256_file
from edgetl.deploy.bundle import build_bundle, pack
from edgetl.deploy.profiles import get_profile
from edgetl.errors import BadInputError, CheckFailedError


def _artifact(folder: Path) -> Path:
    """An artifact folder as `edgetl export` lays it out (model, sidecar, held-out samples); the model's
    bytes are never run here."""
    (folder / "samples").mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"an onnx model, as far as bundling cares")
    (folder / "samples" / "0000.png").write_bytes(b"a held-out photo")
    (folder / "samples" / "labels.json").write_text(json.dumps({"0000.png": "red"}))
    sidecar = Sidecar(format="onnx", precision="fp32", requested_precision="fp32", model_file="model.onnx",
                      labels=["red", "green"], preprocess=Preprocess(size=(8, 8)),
                      input=TensorInfo("x", [1, 3, 8, 8], "float32"), output=TensorInfo("y", [1, 2], "float32"),
                      files={"model.onnx": sha256_file(folder / "model.onnx")})
    (folder / "model.json").write_text(sidecar.to_json())
    return folder


def _bundle(tmp_path: Path, name: str = "bundle") -> tuple[Path, dict]:
    bundle = tmp_path / name
    return bundle, build_bundle(_artifact(tmp_path / f"{name}-artifact"), get_profile("linux-x86"), bundle,
                                samples=5, wheels=False)


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


# -- 1: links in an artifact folder --------------------------------------------------------------
def test_a_link_out_of_the_artifact_is_refused_in_one_line_and_never_bundled(tmp_path):
    secret = tmp_path / "home" / ".ssh" / "id_ed25519"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY----- the deployer's key")
    artifact = _artifact(tmp_path / "shared-artifact")
    (artifact / "samples" / "0001.png").symlink_to(secret)
    labels = {"0000.png": "red", "0001.png": "green"}
    (artifact / "samples" / "labels.json").write_text(json.dumps(labels))

    out = tmp_path / "rpi.tar.gz"
    result = run_cli("deploy", str(artifact), "--profile", "linux-x86", "--bundle-only", str(out), timeout=120)
    assert result.returncode == 2, result.stderr
    line = _one_error_line(result.stderr)
    assert line == (f"error: {artifact / 'samples' / '0001.png'} is a link to {secret}, outside the artifact "
                    "folder: refusing to bundle it"), line
    assert not out.exists()

    with pytest.raises(BadInputError, match="outside the artifact folder"):
        build_bundle(artifact, get_profile("linux-x86"), tmp_path / "bundle", wheels=False)
    assert not (tmp_path / "bundle").exists()


def test_a_link_inside_the_artifact_is_bundled_as_the_file_it_names(tmp_path):
    artifact = _artifact(tmp_path / "artifact")
    (artifact / "samples" / "0001.png").symlink_to("0000.png")
    (artifact / "samples" / "labels.json").write_text(json.dumps({"0000.png": "red", "0001.png": "red"}))
    build_bundle(artifact, get_profile("linux-x86"), tmp_path / "bundle", wheels=False)
    archive = pack(tmp_path / "bundle", tmp_path / "bundle.tar.gz")
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert not any(m.issym() or m.islnk() for m in members.values())
        copied = members["bundle/model/samples/0001.png"]
        assert copied.isfile() and tar.extractfile(copied).read() == b"a held-out photo"

    (artifact / "samples" / "0001.png").unlink()
    (artifact / "golden").symlink_to(artifact / "samples", target_is_directory=True)
    with pytest.raises(BadInputError, match="golden is a link to a folder: refusing to bundle it"):
        build_bundle(artifact, get_profile("linux-x86"), tmp_path / "bundle2", wheels=False)


# -- 2: a deploy root edgetl did not make ---------------------------------------------------------
def _someone_elses_site(root: Path) -> dict[str, bytes]:
    """A web site's deploy folder with releases/, current, a non-object state.json and a unit of its own."""
    (root / "releases" / "v41").mkdir(parents=True)
    (root / "releases" / "v41" / "index.html").write_text("<h1>v41</h1>")
    (root / "releases" / "v42").mkdir()
    (root / "releases" / "v42" / "manifest.json").write_text('{"name": "my PWA", "bundle": "v41"}')
    (root / "releases" / "build.partial").mkdir()
    (root / "releases" / "build.partial" / "half.js").write_text("// my upload in progress")
    (root / "current").symlink_to("releases/v42")
    (root / "state.json").write_text("[1, 2, 3]")
    (root / "edgetl.service").write_text("[Service]\nExecStart=/usr/bin/my-site\n")
    return _snapshot(root)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): (os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_symlink() or p.is_file()}


def test_a_foreign_deploy_root_is_refused_in_one_line_and_left_untouched(tmp_path):
    bundle, _ = _bundle(tmp_path)
    site = tmp_path / "site"
    before = _someone_elses_site(site)
    result = run_cli("install", str(bundle), "--root", str(site), timeout=120)
    assert result.returncode == 2, result.stderr
    line = _one_error_line(result.stderr)
    assert line == (f"error: local:{site} is not empty and was not made by edgetl (no .edgetl marker): "
                    "refusing to deploy into it"), line
    assert _snapshot(site) == before and not (site / ".deploy.lock").exists()

    refused = run_cli("deploy", "--rollback", "--local", str(site), timeout=120)
    assert refused.returncode == 2 and "was not made by edgetl" in _one_error_line(refused.stderr)
    assert _snapshot(site) == before


def test_an_earlier_edgetl_root_is_adopted_and_only_edgetl_releases_are_pruned(tmp_path):
    from edgetl.deploy.local import LocalDevice, _clean_leftovers, _prune, releases

    root, device = tmp_path / "opt-edgetl", LocalDevice()
    (root / "releases").mkdir(parents=True)
    ids = []
    for n in range(3):
        bundle, manifest = _bundle(tmp_path, f"bundle{n}")
        (bundle / atomic.MARKER).unlink()  # releases made before bundles carried one
        bundle.rename(root / "releases" / manifest["bundle"])
        ids.append(manifest["bundle"])
    ids.sort()  # release age order (three built in one second differ in their random tail)
    (root / "current").symlink_to(f"releases/{ids[-1]}")
    (root / "state.json").write_text(json.dumps({"current": ids[-1], "previous": ids[-2], "history": ids}))
    (root / ".deploy.lock").touch()
    (root / "releases" / "0-their-notes").mkdir()
    (root / "releases" / "0-their-notes" / "manifest.json").write_text('{"bundle": "something else"}')
    (root / "releases" / "upload.partial").mkdir()  # not edgetl's: no manifest naming it
    ours = root / "releases" / f"{ids[0]}x.partial"
    ours.mkdir()
    (ours / "manifest.json").write_text(json.dumps({"bundle": f"{ids[0]}x"}, indent=2))

    assert releases(device, str(root)) == ids
    _clean_leftovers(device, str(root))
    _prune(device, str(root), keep=1, state={"current": ids[-1], "previous": None})
    left = sorted(p.name for p in (root / "releases").iterdir())
    assert left == sorted(["0-their-notes", "upload.partial", ids[-1]])

    from edgetl.deploy.local import claim_root

    before = _snapshot(root)
    claim_root(device, str(root))  # what every deploy and rollback does first
    assert atomic.is_marker((root / atomic.MARKER).read_text(), "deploy-root")
    assert _snapshot(root) == {**before, atomic.MARKER: (root / atomic.MARKER).read_bytes()}

    empty = tmp_path / "fresh"
    claim_root(device, str(empty))
    assert atomic.made_by_edgetl(empty)


def _installable_bundle(tmp_path: Path, name: str) -> Path:
    """A bundle of a real (tiny) ONNX model with a golden sample that installs without wheels: its
    install.sh gives the release a `venv/bin/python` that runs this test's interpreter, and SHA256SUMS
    and the manifest are rewritten for it as build_bundle writes them."""
    import sys

    pytest.importorskip("onnxruntime")
    from onnx import save
    from test_device_state import mean_per_channel_onnx
    from PIL import Image

    from edgetl.contract.sidecar import GoldenSample
    from edgetl.deploy.bundle import CHECKSUMS, MANIFEST

    artifact = _artifact(tmp_path / f"{name}-artifact")
    save(mean_per_channel_onnx(), str(artifact / "model.onnx"))
    (artifact / "golden").mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(artifact / "golden" / "00.png")
    sidecar = Sidecar.read(artifact)
    sidecar.labels, sidecar.output = ["red", "green", "blue"], TensorInfo("y", [1, 3], "float32")
    sidecar.files = {"model.onnx": sha256_file(artifact / "model.onnx")}
    sidecar.golden = [GoldenSample(file="golden/00.png", label="red", top1=0, topk=[[0, 1.0]], logits=[1, 0, 0],
                                   artifact_top1=0, artifact_logits=[1, 0, 0])]
    (artifact / "model.json").write_text(sidecar.to_json())
    bundle = tmp_path / name
    manifest = build_bundle(artifact, get_profile("linux-x86"), bundle, samples=0, wheels=False)
    (bundle / "install.sh").write_text(f"""#!/bin/sh
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here/venv/bin"
printf '#!/bin/sh\\nexec %s "$@"\\n' '{sys.executable}' > "$here/venv/bin/python"
chmod +x "$here/venv/bin/python"
""")
    manifest["files"] = {p.relative_to(bundle).as_posix(): sha256_file(p) for p in sorted(bundle.rglob("*"))
                         if p.is_file() and p.name not in (CHECKSUMS, MANIFEST, atomic.MARKER)}
    (bundle / CHECKSUMS).write_text("".join(f"{d}  {n}\n" for n, d in manifest["files"].items()))
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return bundle


def test_deploys_mark_their_root_and_keep_working_in_a_root_from_before_the_marker(tmp_path):
    from edgetl.deploy.local import install_release

    root = tmp_path / "opt-edgetl"
    first = install_release(_installable_bundle(tmp_path, "b0"), root, threads=1)
    assert atomic.is_marker((root / atomic.MARKER).read_text(), "deploy-root")
    (root / atomic.MARKER).unlink()  # the root as an edgetl from before the marker left it
    (root / "releases" / "their-notes").mkdir()
    installed = [first["release"]] + [install_release(_installable_bundle(tmp_path, f"b{n}"), root,
                                                      threads=1)["release"] for n in (1, 2, 3)]
    assert atomic.is_marker((root / atomic.MARKER).read_text(), "deploy-root")
    assert os.readlink(root / "current") == f"releases/{installed[-1]}"
    kept = sorted(p.name for p in (root / "releases").iterdir())
    assert len(kept) == 4 and "their-notes" in kept and set(kept) - {"their-notes"} <= set(installed)


def test_camera_credentials_go_to_a_0600_environment_file_never_into_the_bundle_or_the_unit(tmp_path, monkeypatch):
    from edgetl.deploy.local import install_release
    from edgetl.deploy.service import read_env_file

    profiles = tmp_path / "profiles"
    profiles.mkdir()
    text = (Path(__file__).resolve().parents[1] / "devices" / "linux-x86.yaml").read_text()
    (profiles / "linux-x86.yaml").write_text(text.replace('source: "0"', 'source: "rtsp://admin:hunter2@cam/s"'))
    monkeypatch.setenv("EDGETL_DEVICES_PATH", str(profiles))
    with pytest.raises(BadInputError, match="carries credentials") as info:
        build_bundle(_artifact(tmp_path / "art"), get_profile("linux-x86"), tmp_path / "never", wheels=False)
    assert "hunter2" not in info.value.message + (info.value.hint or "") and not (tmp_path / "never").exists()
    monkeypatch.delenv("EDGETL_DEVICES_PATH")

    secrets = tmp_path / "camera.env"
    secrets.write_text("EDGETL_SOURCE=rtsp://admin:hunter2@cam/s\n")
    secrets.chmod(0o644)
    with pytest.raises(BadInputError, match="readable by other users"):
        read_env_file(secrets)
    secrets.chmod(0o600)
    root = tmp_path / "opt-edgetl"
    install_release(_installable_bundle(tmp_path, "b0"), root, threads=1, camera_env=read_env_file(secrets))
    env = root / "edgetl.env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600 and "hunter2" in env.read_text()
    unit = (root / "edgetl.service").read_text()
    assert f"EnvironmentFile=-{root}/edgetl.env" in unit and '"--source"' not in unit and "hunter2" not in unit
    assert not any("hunter2" in p.read_text(errors="ignore") for p in (root / "releases").rglob("*") if p.is_file())
    (tmp_path / "bad.env").write_text("rtsp://admin:hunter2@cam/s\n")
    (tmp_path / "bad.env").chmod(0o600)
    with pytest.raises(BadInputError, match="line 1 is not KEY=VALUE"):
        read_env_file(tmp_path / "bad.env")


# -- 4: text from devices, sidecars and file names ------------------------------------------------
def test_device_text_in_the_fleet_table_is_plain_text_with_escapes_visible(capsys):
    from edgetl.cli.deploy import _fleet_verdict

    error = ("install failed on cam-2: ERROR: No matching distribution for edgetl[device,onnx] in [/opt/edgetl]"
             "\x1b]0;owned\x07\x1b[2J\r")
    rows = [{"ok": False, "host": "cam-2:22", "error": error, "hint": None, "exit_code": 1},
            {"ok": False, "host": "[bold]cam-3:22", "error": "self-test of :smile: failed", "hint": None,
             "exit_code": 1}]
    with pytest.raises(CheckFailedError):
        _fleet_verdict(rows, "linux-x86")
    shown = capsys.readouterr().err
    assert "edgetl[device,onnx]" in shown and "[/opt/edgetl]" in shown and "[bold]cam-3:22" in shown
    assert ":smile:" in shown
    assert "\\x1b]0;owned\\x07\\x1b[2J\\r" in shown
    assert "\x1b" not in shown and "\x07" not in shown and "\r" not in shown


def test_a_file_name_in_an_error_line_cannot_drive_the_terminal(tmp_path):
    bundle = tmp_path / "bundle\x1b]0;owned\x07[red]x"
    bundle.mkdir()
    result = run_cli("install", str(bundle), "--root", str(tmp_path / "root"), timeout=120)
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert "bundle\\x1b]0;owned\\x07[red]x is not a complete edgetl bundle" in line
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr


def test_warnings_and_info_lines_print_markup_characters_as_they_are(capsys, monkeypatch):
    from edgetl import console
    from edgetl.console import info, warn

    monkeypatch.setattr(console, "_quiet", False)  # an earlier in-process `-q` command leaves it set

    warn("pip install 'edgetl[device,onnx]' on [/opt/edgetl]\x1b[31m")
    info("label [red]stop[/red]\ttab")
    shown = capsys.readouterr().err
    assert "warning: pip install 'edgetl[device,onnx]' on [/opt/edgetl]\\x1b[31m" in shown
    assert "label [red]stop[/red]\\ttab" in shown and "\x1b" not in shown


# -- 6: atomic writes over special files and links ------------------------------------------------
def test_an_atomic_write_to_a_fifo_writes_into_it(tmp_path):
    fifo = tmp_path / "figure.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        atomic.write_bytes(fifo, b"a small PNG")
        assert os.read(reader, 100) == b"a small PNG"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and atomic.is_special(fifo)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.fifo"]


def test_an_atomic_write_to_a_character_device_writes_into_it(tmp_path):
    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # the null device's numbers, in tmp_path
        null.write_bytes(b"probe")
    except OSError as exc:
        pytest.skip(f"cannot make a device node here ({exc.strerror})")
    atomic.write_with(null, lambda tmp: tmp.write_bytes(b"\x89PNG a whole figure"))
    assert stat.S_ISCHR(os.lstat(null).st_mode) and os.lstat(null).st_rdev == os.makedev(1, 3)
    atomic.write_bytes("/dev/null", b"\x89PNG")
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_an_atomic_write_refuses_to_replace_a_symlink(tmp_path):
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    link = tmp_path / "bench.png"
    link.symlink_to(mine)
    with pytest.raises(BadInputError) as refused:
        atomic.write_bytes(link, b"\x89PNG")
    assert refused.value.message == f"{link} is a symbolic link (to {mine}): refusing to replace it with the file"
    assert link.is_symlink() and mine.read_text() == "mine"

    folder_link = tmp_path / "out"
    folder_link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(BadInputError, match="is a symbolic link"):
        with atomic.atomic_dir(folder_link) as tmp:
            (tmp / "file").write_text("x")
    assert folder_link.is_symlink()


def test_over_ssh_a_foreign_path_is_that_hosts_refusal_and_an_earlier_root_is_adopted(tmp_path):
    from edgetl.deploy.fleet import deploy_fleet
    from edgetl.deploy.local import claim_root, releases
    from edgetl.deploy.target import SshTarget, connected
    from sshd import SSHD, start_sshd

    if SSHD is None:
        pytest.skip("needs OpenSSH's sshd")
    server = start_sshd(tmp_path / "sshd")
    try:
        bundle, manifest = _bundle(tmp_path)
        site = tmp_path / "var-www-app"
        before = _someone_elses_site(site)
        target = dict(host="127.0.0.1", port=server.port, user="root", identity=str(server.identity),
                      known_hosts=str(server.known_hosts), timeout=10)
        [row] = deploy_fleet(bundle, [SshTarget(**target, path=str(site))])
        assert not row["ok"] and row["exit_code"] == 2
        assert row["error"] == (f"root@127.0.0.1:{server.port}:{site} is not empty and was not made by edgetl "
                                "(no .edgetl marker): refusing to deploy into it")
        assert _snapshot(site) == before

        earlier = tmp_path / "opt-edgetl"
        (earlier / "releases").mkdir(parents=True)
        (bundle / atomic.MARKER).unlink()
        bundle.rename(earlier / "releases" / manifest["bundle"])
        (earlier / "current").symlink_to(f"releases/{manifest['bundle']}")
        with connected(SshTarget(**target)) as device:
            claim_root(device, str(earlier))
            assert releases(device, str(earlier)) == [manifest["bundle"]]
        assert atomic.is_marker((earlier / atomic.MARKER).read_text(), "deploy-root")
    finally:
        server.stop()


def test_a_pi_profiles_image_pixel_limit_reaches_its_service_and_a_bad_one_names_its_field(tmp_path, monkeypatch):
    from edgetl.deploy.service import service_unit

    unit = service_unit(get_profile("rpi4").to_dict(), "/opt/edgetl")
    assert "Environment=EDGETL_MAX_IMAGE_PIXELS=16777216" in unit.splitlines()
    assert "EDGETL_MAX_IMAGE_PIXELS" not in service_unit(get_profile("linux-x86").to_dict(), "/opt/edgetl")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    text = (Path(__file__).resolve().parents[1] / "devices" / "rpi4.yaml").read_text()
    (profiles / "rpi4.yaml").write_text(text.replace("max_image_pixels: 16777216", "max_image_pixels: lots"))
    monkeypatch.setenv("EDGETL_DEVICES_PATH", str(profiles))
    with pytest.raises(BadInputError, match="max_image_pixels"):
        get_profile("rpi4")
