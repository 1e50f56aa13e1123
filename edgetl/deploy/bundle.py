"""Offline bundles: everything a device needs to install and prove a model, with no network.

    bundle/
      model/            the artifact folder (model file(s), model.json sidecar, golden/, samples/)
      samples/          up to --samples of the artifact's held-out photos + labels.json
      wheels/           edgetl's wheel and every dependency for the device's platform and Python
      install.sh        creates the release's own venv from wheels/ (pip --no-index)
      edgetl.service    systemd unit running `edgetl run` on the camera at boot
      manifest.json     bundle id, profile, artifact, sha256 of every file, the signer's key id
      SHA256SUMS        sha256 of every file (manifest.json included), for `sha256sum -c`
      SHA256SUMS.sig    the Ed25519 signature of SHA256SUMS; signer.pub.pem: the signer's public key

The artifact is the folder given, or the first of the profile's targets that the run has
exported (when none is, `edgetl deploy` exports it first: this module never imports an
exporter, so a device-side or deploy-only install needs no torch). Wheels come from `pip download` with the
profile's platform tags and Python version, so an aarch64 Pi bundle can be built
on an x86 laptop.

Nothing outside the artifact folder enters a bundle. A symbolic link in the artifact is copied as the
regular file it names when that file lies inside the artifact folder; a link to anything outside it, a
link to a folder, and anything that is neither a regular file nor a folder (a FIFO, a device) stop the
build with one line. A shared artifact with `samples/0000.png -> ~/.ssh/id_ed25519` would otherwise put
the key into the tarball and onto every device.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from edgetl import __version__, atomic
from edgetl.console import info
from edgetl.contract.artifact import LABELS_FILE, SAMPLES_DIR, int8_over_fp32, read_samples
from edgetl.contract.formats import get_format
from edgetl.contract.sidecar import SIDECAR_NAME, Sidecar, sha256_file
from edgetl.deploy import signing
from edgetl.deploy.install_script import engine_script, install_script
from edgetl.deploy.profiles import DeviceProfile
from edgetl.deploy.service import SERVICE_NAME, service_unit
from edgetl.errors import BadInputError

MANIFEST = "manifest.json"
CHECKSUMS = "SHA256SUMS"
CORE_DEPENDENCIES = ("numpy", "pillow", "click", "rich", "pyyaml")  # + the `device` extra (OpenCV, paho-mqtt)


class NoArtifactError(BadInputError):
    """The run has none of the profile's artifacts (`edgetl deploy` exports one first; deploy never exports)."""

    def __init__(self, source: Path, profile: DeviceProfile):
        target = profile.preferred
        super().__init__(f"{source} has no artifact for {profile.name}",
                         f"run `edgetl export {source} --format {target.format} --precision {target.precision}`")
        self.format, self.precision = target.format, target.precision


def find_artifact(source: Path, profile: DeviceProfile) -> Path | None:
    """An artifact folder for `profile`: `source` itself, or the first of the profile's targets that the
    run directory `source` has exported; None when the run has none of them."""
    if (source / SIDECAR_NAME).is_file():
        return source
    if not (source / "labels.json").is_file():
        raise BadInputError(f"{source} is neither an artifact folder nor an edgetl run directory",
                            "pass the folder `edgetl finetune` wrote, or one of its export/<format>-<precision>/")
    for target in profile.targets:
        folder = source / "export" / f"{target.format}-{target.precision}"
        if not (folder / SIDECAR_NAME).is_file():
            continue
        sidecar = Sidecar.read(folder)
        ratio = int8_over_fp32(sidecar)
        if ratio is not None and ratio > 1.0:  # exported with --no-speed-gate: never the default choice
            info(f"skipping {folder.name}: int8 measured {ratio:.2f}x its fp32's latency at export")
        elif sidecar.precision == target.precision:
            return folder
    return None


def choose_artifact(source: Path, profile: DeviceProfile) -> Path:
    """`find_artifact`, or NoArtifactError naming the export that would make one."""
    found = find_artifact(source, profile)
    if found is None:
        raise NoArtifactError(source, profile)
    return found


class OutsideArtifactError(BadInputError):
    """A link or special file in an artifact folder that a bundle must not follow or copy."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"{path} {why}: refusing to bundle it",
                         "copy the file itself into the artifact folder, or remove it")


def _opened_path(fd: int, path: Path) -> Path:
    """The file an open descriptor really reads (Linux's /proc names it after every link and rename)."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return Path(os.path.realpath(path))


def _copy_file(source: Path, root: Path, destination: Path) -> None:
    """Copy `source` as a regular file, refusing one whose opened file is not inside `root` (checked on the
    descriptor that is read, so a link swapped in meanwhile is caught too)."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the build
    except OSError as exc:
        raise OutsideArtifactError(source, f"cannot be read ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OutsideArtifactError(source, "is not a regular file")
        opened = _opened_path(fd, source)
        if not opened.is_relative_to(root):
            raise OutsideArtifactError(source, f"is a link to {opened}, outside the artifact folder")
        with open(destination, "wb") as out:
            shutil.copyfileobj(handle, out)


def copy_artifact(artifact: Path, destination: Path) -> None:
    """The artifact folder's files into `destination`, links resolved only inside it (see the module doc)."""
    root = artifact.resolve()
    for folder, subfolders, names in os.walk(root):
        here = Path(folder)
        (destination / here.relative_to(root)).mkdir(parents=True, exist_ok=True)
        for name in subfolders:
            if (here / name).is_symlink():
                raise OutsideArtifactError(here / name, "is a link to a folder")
        for name in names:
            _copy_file(here / name, root, destination / here.relative_to(root) / name)


def _samples(artifact: Path, folder: Path, count: int) -> int:
    """Up to `count` of the held-out photos the artifact carries, every class in turn, into `folder`."""
    labels = read_samples(artifact)
    by_class: dict[str, list[str]] = {}
    for name in sorted(labels):
        by_class.setdefault(labels[name], []).append(name)
    chosen: dict[str, str] = {}
    while len(chosen) < min(count, len(labels)):
        for names in by_class.values():
            if names and len(chosen) < count:
                name = names.pop(0)
                chosen[name] = labels[name]
    folder.mkdir(parents=True)
    for name in chosen:
        shutil.copyfile(artifact / SAMPLES_DIR / name, folder / name)
    atomic.write_json(folder / LABELS_FILE, chosen)
    return len(chosen)


def extra_requirements(extra: str) -> list[str]:
    """The requirements of one of edgetl's extras (`onnx`, `tflite`, ...), from its own metadata: the
    same list `pip install edgetl[EXTRA]` on the device will ask the bundled wheels for."""
    from importlib.metadata import requires

    marker = f'extra == "{extra}"'
    return [r.split(";")[0].strip() for r in requires("edgetl") or [] if marker in r]


def _wheels(profile: DeviceProfile, folder: Path, extra: str) -> list[str]:
    from edgetl.deploy.wheel import edgetl_wheel

    folder.mkdir(parents=True)
    edgetl_wheel(folder)  # from the source tree, or repacked from an installed edgetl
    runtime = profile.runtime
    packages = [*CORE_DEPENDENCIES, *extra_requirements("device")]
    if not runtime.get("preinstalled"):
        packages.append(f"{runtime['package']}=={runtime['version']}" if runtime.get("version")
                        else runtime["package"])
    if extra != runtime.get("extra"):  # an artifact the profile does not name first (a fallback, a --pick)
        packages += extra_requirements(extra)
    command = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--dest", str(folder),
               "--python-version", profile.python, "--implementation", "cp"]
    for tag in profile.platform_tags:
        command += ["--platform", tag]
    with tempfile.TemporaryDirectory(prefix="edgetl-wheels-") as scratch:  # outside the bundle: not shipped
        if profile.wheel_constraints:  # e.g. the Pi's numpy<2, for the system's Picamera2 (profiles._constraints)
            constraints = Path(scratch) / "constraints.txt"
            constraints.write_text("".join(f"{line}\n" for line in profile.wheel_constraints))
            command += ["--constraint", str(constraints)]
        result = subprocess.run(command + packages, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip download failed"])[-1]
        raise BadInputError(f"could not download wheels for {profile.name} ({profile.arch}, Python "
                            f"{profile.python}): {last}",
                            "check the profile's runtime version, platform tags and wheel_constraints")
    return sorted(p.name for p in folder.iterdir())


def _refuse_secret_source(profile: DeviceProfile) -> None:
    """A camera URL with a password would sit in the manifest, the unit and every tarball: refused."""
    from edgetl.runtime.sources import redact_url

    source = str(profile.camera.get("source", "0"))
    if redact_url(source) != source:
        raise BadInputError(f"device profile {profile.name}: camera.source {redact_url(source)} carries credentials, "
                            "which would be readable in the bundle, its manifest and the service unit",
                            "leave them out of the profile and pass --camera-env FILE (mode 0600) with "
                            "EDGETL_SOURCE=<url>: it becomes ROOT/edgetl.env, read by the service only")


def _refuse_engines(artifact: Path, profile: DeviceProfile) -> None:
    """A TensorRT engine cache inside an artifact: the device's TensorRT would load it as it is, and an engine
    is code built for one GPU and TensorRT version, so it is only ever built on the device itself."""
    for name in {"trt_cache", profile.tensorrt.get("engine_cache", "trt_cache")}:
        if (artifact / name).exists() or (artifact / name).is_symlink():
            raise BadInputError(f"{artifact / name} is a TensorRT engine cache inside the artifact: refusing to "
                                "bundle it (engines are built on the device)", f"delete {artifact / name}")


def build_bundle(source: str | Path, profile: DeviceProfile, out: str | Path, samples: int = 50,
                 wheels: bool = True, sign: bool = True) -> dict:
    """Write the bundle folder `out` (atomically) and return its manifest. Everything comes from the
    artifact folder (its model, sidecar, golden and held-out samples), never from the run directory.
    `sign`: with this user's signing key (`signing.py`; created on first use)."""
    artifact = choose_artifact(Path(source), profile)
    _refuse_secret_source(profile)
    sidecar = Sidecar.read(artifact)
    _refuse_engines(artifact, profile)
    extra = get_format(sidecar.format).device_extra
    digest = sidecar.files.get(sidecar.model_file)
    if not digest:
        raise BadInputError(f"{artifact} records no sha256 of its model file {sidecar.model_file}: the device "
                            "could not verify it", "re-export the artifact with `edgetl export`")
    # Time first (releases sort by age), then the model's digest, then randomness: two bundles of one
    # model built in the same second are still two releases.
    bundle_id = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + digest[:8] + "-" + secrets.token_hex(2)
    with atomic.atomic_dir(out, kind="bundle") as tmp:
        copy_artifact(artifact, tmp / "model")
        sample_count = _samples(tmp / "model", tmp / "samples", samples)  # from the checked copy
        wheel_names = _wheels(profile, tmp / "wheels", extra) if wheels else []
        requirement = shlex.quote(f"edgetl[device,{extra}]" if not profile.runtime.get("preinstalled")
                                  else "edgetl[device]")
        # A preinstalled runtime (JetPack's onnxruntime-gpu) is reached through the system site-packages.
        venv_flags = "--system-site-packages " if profile.runtime.get("preinstalled") else ""
        (tmp / "install.sh").write_text(install_script(profile, requirement, venv_flags))
        (tmp / "install.sh").chmod(0o755)
        if profile.tensorrt.get("build") and sidecar.format == "onnx":
            (tmp / "build_engine.sh").write_text(engine_script(profile, sidecar.model_file))
            (tmp / "build_engine.sh").chmod(0o755)
        # Deploy rewrites the unit for the root it installs to; this copy is for the profile's install_path.
        (tmp / SERVICE_NAME).write_text(service_unit(profile.to_dict(), profile.install_path))
        signer = signing.public_key() if sign else None
        if signer:
            (tmp / signing.SIGNER).write_text(signer["public_pem"])
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {"bundle": bundle_id, "edgetl_version": __version__, "profile": profile.to_dict(),
                    "artifact": {"format": sidecar.format, "precision": sidecar.precision,
                                 "model_file": sidecar.model_file, "source": sidecar.source},
                    "samples": sample_count, "wheels": wheel_names, "files": files,
                    "signed_by": signer["key_id"] if signer else None}
        atomic.write_json(tmp / MANIFEST, manifest)
        # The digests for `sha256sum -c` on a device that has coreutils but no edgetl yet, the manifest's
        # included: the signature over this file then covers every byte of the bundle.
        listed = {**files, MANIFEST: sha256_file(tmp / MANIFEST)}
        (tmp / CHECKSUMS).write_text("".join(f"{digest}  {name}\n" for name, digest in sorted(listed.items())))
        if signer:
            signing.sign_bundle(tmp)
    return manifest


def pack(folder: Path, archive: Path) -> Path:
    """A .tar.gz of the bundle folder, written atomically."""
    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(folder, arcname="bundle")

    return atomic.write_with(archive, write)


def verify_bundle(folder: Path) -> list[str]:
    """Files whose sha256 differs from the manifest (or are missing); empty when the bundle is intact."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return [MANIFEST]
    manifest = json.loads(manifest_path.read_text())
    return [name for name, digest in manifest["files"].items()
            if not (folder / name).is_file() or sha256_file(folder / name) != digest]
