"""The scripts a bundle carries: install.sh (checks, then the release's venv from the bundled wheels) and,
for TensorRT profiles, build_engine.sh. Templates, filled in by `bundle.build_bundle`.

A profile whose camera goes through libcamera (the Raspberry Pi's) also gets SYSTEM_CAMERA: the Camera Module's
Python interface is the system's Picamera2 (python3-picamera2, bound to the system's libcamera; no pip wheel
works alone), while the venv stays isolated (never --system-site-packages), so no system package can shadow
or stand in for the bundled wheels. install.sh asks the system's Python which modules `import picamera2`
loads from its site-packages, drops every one the venv already has (numpy, PIL, cv2 ... come from the
bundle), and links the rest (picamera2, libcamera, simplejpeg, prctl, ...) into venv/system-camera/, which a
.pth file adds to the venv's path after its own site-packages: the venv's packages always win. A system
without Picamera2, or one whose Picamera2 does not import in the venv, is one line, never a failed install:
USB webcams (--source 0) need none of it.
"""

from __future__ import annotations

import re
import shlex

from edgetl.deploy import signing
from edgetl.deploy.profiles import DeviceProfile

INSTALL_SH = """#!/bin/sh
# Installs this release from the bundled wheels, with no network. Two ways:
#   sh install.sh              what `edgetl deploy` runs in ROOT/releases/ID.partial: builds venv/ here
#   sh install.sh --root DIR   offline: the same releases/ + current layout, self-test and switch as a
#                              deploy, through the bundle's own edgetl (PYTHON=python3.X to choose Python)
# Before anything from the bundle runs: SHA256SUMS must carry a signature by a key that ROOT trusts
# (ROOT/trusted-keys/ID.pem; `edgetl deploy` puts its own there on first contact, and an offline first
# install into a root with no keys trusts the bundle's signer, as SSH's first contact does), checked with
# the device's OpenSSL, and every file must match SHA256SUMS.
# --allow-unsigned (or EDGETL_ALLOW_UNSIGNED=1) accepts a bundle without a signature: then anyone who
# can change the bundle's files and recompute SHA256SUMS can run code on this device.
# --allow-downgrade installs a bundle built before the current release (refused by default).
# --stage (with --root) installs and self-tests the release without switching to it (`edgetl activate`
# switches later: what the Mender update module's ArtifactInstall and ArtifactCommit do).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${{PYTHON:-python{python}}}
fail() {{ echo "install.sh: $*" >&2; exit 1; }}
{camera_function}root=$(cd "$here/../.." && pwd)
offline=""
stage=""
unsigned=${{EDGETL_ALLOW_UNSIGNED:-0}}
while [ $# -gt 0 ]; do
  case $1 in
    --root) [ -n "${{2:-}}" ] || {{ echo "usage: sh install.sh [--root DIR] [--allow-unsigned] [--allow-downgrade]" >&2; exit 2; }}
            offline=$2; root=$2; shift 2 ;;
    --allow-unsigned) unsigned=1; shift ;;
    --allow-downgrade) export EDGETL_ALLOW_DOWNGRADE=1; shift ;;
    --stage) stage=--no-activate; shift ;;
    *) echo "usage: sh install.sh [--root DIR [--stage]] [--allow-unsigned] [--allow-downgrade]" >&2; exit 2 ;;
  esac
done
keys="$root/{trusted}"
trusted=$(ls "$keys" 2>/dev/null | grep -c '^[0-9a-f]\\{{16\\}}\\.pem$' || true)
if [ ! -f "$here/{signature}" ]; then
  [ "$unsigned" = 1 ] || fail "this bundle is not signed: refusing it (rebuild it with edgetl deploy ... --bundle-only, which signs it, or pass --allow-unsigned to install it unverified)"
  echo "install.sh: installing an UNSIGNED bundle (--allow-unsigned): its origin is not verified" >&2
else
  command -v openssl >/dev/null 2>&1 || fail "openssl is needed to check the bundle's signature (apt install openssl)"
  id=$(openssl pkey -pubin -in "$here/{signer}" -outform DER 2>/dev/null | tail -c 32 | sha256sum | cut -c1-16)
  case $id in *[!0-9a-f]*|"") fail "{signer} is not an Ed25519 public key" ;; esac
  if [ ! -f "$keys/$id.pem" ]; then
    [ -n "$offline" ] && [ "$trusted" = 0 ] || fail "signed by key $id, which $root does not trust (its keys: $keys)"
    key="$here/{signer}"
  else
    key="$keys/$id.pem"
  fi
  openssl pkeyutl -verify -pubin -inkey "$key" -rawin -in "$here/SHA256SUMS" -sigfile "$here/{signature}" >/dev/null 2>&1 \\
    || fail "the signature of SHA256SUMS does not verify with key $id: the bundle was changed after it was signed"
fi
if ! (cd "$here" && sha256sum --quiet -c SHA256SUMS); then
  fail "files differ from SHA256SUMS: this bundle is corrupt or incomplete; copy it again"
fi
if [ -f "$here/{signature}" ] && [ "$key" = "$here/{signer}" ]; then
  mkdir -p "$keys"
  cp "$here/{signer}" "$keys/$id.pem.tmp" && mv "$keys/$id.pem.tmp" "$keys/$id.pem"
  echo "install.sh: $root had no trusted keys: it now trusts key $id, this bundle's signer" >&2
fi
# make_venv DEST [FROM]: DEST becomes a venv of this bundle's wheels. FROM, a venv made by this script from
# byte-identical wheels with the same Python and flags (its stamp says so; the wheels' digests were just
# verified), is copied instead: a model-only update then installs in seconds, not pip's minutes on a Pi.
stamp=$({{ grep '  wheels/' "$here/SHA256SUMS"; printf '%s\n' {venv_flags}{requirement}; "$python" -c 'import os, sys; print(sys.version, os.path.realpath(sys.executable))'; }} | sha256sum | cut -c1-64)
make_venv() {{
  if [ "{reusable}" = 1 ] && [ -n "${{2:-}}" ] && [ "$(cat "$2/.edgetl-env" 2>/dev/null)" = "$stamp" ]; then
    rm -rf "$1.copy"
    if cp -a "$2" "$1.copy" && mv "$1.copy" "$1"; then
      echo "install.sh: environment copied from $2 (the same wheels)"
      return 0
    fi
    rm -rf "$1.copy"
  fi
  "$python" -m venv {venv_flags}"$1"
  "$1/bin/pip" install --no-index --find-links "$here/wheels" --disable-pip-version-check -q {requirement}
  echo "$stamp" > "$1/.edgetl-env"
  echo "install.sh: environment built from the bundled wheels"
}}
if [ -n "$offline" ]; then
  boot=$(mktemp -d)
  trap 'rm -rf "$boot"' EXIT
  make_venv "$boot/venv" "$root/current/venv"
  EDGETL_VENV_FROM="$boot/venv" EDGETL_ALLOW_UNSIGNED=$unsigned PYTHON=$python "$boot/venv/bin/python" -m edgetl install "$here" --root "$offline" $stage
  exit 0
fi
make_venv "$here/venv" "${{EDGETL_VENV_FROM:-}}"
{system_opencv}{camera_link}"$here/venv/bin/python" -m edgetl --version
if [ -x "$here/build_engine.sh" ]; then "$here/build_engine.sh"; fi
"""

# GStreamer camera pipelines need the system's OpenCV (pip's wheels are built without GStreamer):
# drop the wheel from the venv so the system-site-packages one is imported, when the system has it.
SYSTEM_OPENCV = """if "$python" -c "import cv2, re, sys; sys.exit(not re.search(r'GStreamer:\\s+YES', cv2.getBuildInformation()))" 2>/dev/null; then
  "$here/venv/bin/python" -m pip uninstall -y -q opencv-python-headless
fi
"""

ENGINE_SH = """#!/bin/sh
# Builds the TensorRT engine on this device from the QDQ ONNX model: engines are tied to the
# GPU and TensorRT version they were built with, so they are never shipped, always built here.
# onnxruntime's TensorRT provider then loads it from the cache folder beside the model.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here"/model/{cache}
{command}
"""

# -- the Camera Module's Picamera2 from the system (see edgetl/deploy/install_script.py) ------------------
SYSTEM_CAMERA = r"""# system_camera VENV: make the system's Picamera2 importable in VENV, or say in one line on stderr why
# the Camera Module source will not work there (edgetl install and deploy pass it on). Never fatal.
system_camera() {
  rm -rf "$1/system-camera"  # links of an earlier install (a copied environment) are made again
  found=$("$python" -I -c '
import os, site, sys
try:
    import picamera2
except ModuleNotFoundError as exc:
    print("missing" if exc.name == "picamera2" else "error: " + " ".join(str(exc).split())[:300])
    sys.exit()
except Exception as exc:
    print("error: " + type(exc).__name__ + ": " + " ".join(str(exc).split())[:300])
    sys.exit()
venv = sys.prefix != sys.base_prefix
dirs = [os.path.abspath(d) + os.sep for d in site.getsitepackages() if not (venv and d.startswith(sys.prefix))]
for name, module in sorted(sys.modules.items()):
    path = getattr(module, "__file__", None)
    if "." in name or not isinstance(path, str):
        continue
    path = os.path.abspath(path)
    if os.path.basename(path).startswith("__init__."):
        path = os.path.dirname(path)
    if any(path.startswith(d) for d in dirs):
        print(name + "\t" + path)
' 2>/dev/null) || found="error: $python could not run"
  case $found in
    missing)
      echo "install.sh: no Picamera2 on this system: the Camera Module source (--source picamera2) needs it: sudo apt install python3-picamera2 (USB webcams work without it)" >&2
      return 0 ;;
    error:*)
      echo "install.sh: the system's Picamera2 does not import (${found#error: }): the Camera Module source (--source picamera2) will not work (USB webcams work without it)" >&2
      return 0 ;;
  esac
  linked=$(printf '%s\n' "$found" | "$1/bin/python" -I -c '
import importlib.util, os, sys, sysconfig
folder = os.path.join(sys.argv[1], "system-camera")
os.makedirs(folder, exist_ok=True)
linked = []
for line in sys.stdin:
    name, _, path = line.rstrip("\n").partition("\t")
    if not path or importlib.util.find_spec(name) is not None:
        continue
    link = os.path.join(folder, os.path.basename(path))
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(path, link)
    linked.append(name)
site = sysconfig.get_paths()["purelib"]
with open(os.path.join(site, "edgetl-system-camera.pth"), "w") as pth:
    pth.write(os.path.relpath(folder, site) + "\n")
print(" ".join(linked))
' "$1") || { echo "install.sh: could not link the system's Picamera2 into $1: the Camera Module source (--source picamera2) will not work" >&2; return 0; }
  echo "install.sh: the Camera Module source uses the system's Picamera2 (from the system: $linked)"
  if ! problem=$("$1/bin/python" -I -c "import picamera2" 2>&1); then
    echo "install.sh: the system's Picamera2 does not import in the release venv ($(printf '%s\n' "$problem" | tail -n 1)): the Camera Module source (--source picamera2) will not work (USB webcams work without it)" >&2
  fi
}
"""
CAMERA_LINK = 'system_camera "$here/venv"\n'


def install_script(profile: DeviceProfile, requirement: str, venv_flags: str) -> str:
    """install.sh for `profile`: `requirement` is what pip installs from wheels/ (quoted), `venv_flags`
    "--system-site-packages " for a runtime the device has preinstalled (JetPack's), else ""."""
    gstreamer = profile.camera.get("pipeline") == "gstreamer" and bool(venv_flags)
    # With the system's site-packages on the path (a preinstalled runtime), Picamera2 needs no links.
    libcamera = profile.camera.get("pipeline") == "libcamera" and not venv_flags
    return INSTALL_SH.format(
        python=profile.python, requirement=requirement, venv_flags=venv_flags, trusted=signing.TRUSTED_KEYS,
        signature=signing.SIGNATURE, signer=signing.SIGNER, system_opencv=SYSTEM_OPENCV if gstreamer else "",
        camera_function=SYSTEM_CAMERA if libcamera else "", camera_link=CAMERA_LINK if libcamera else "",
        reusable="" if venv_flags else "1")  # a venv on the system's site-packages depends on more than its wheels


def engine_script(profile: DeviceProfile, model_file: str) -> str:
    """The device-side TensorRT build command from the profile's template, every path quoted."""
    template = profile.tensorrt["build"]
    cache = profile.tensorrt.get("engine_cache", "trt_cache")
    model = '"$here"/model/' + shlex.quote(model_file)
    engine = '"$here"/model/' + shlex.quote(f"{cache}/model.engine")
    paths = {"{model}": model, "{engine}": engine}  # already quoted
    parts = ["".join(paths.get(piece) or shlex.quote(piece) for piece in re.split(r"(\{model\}|\{engine\})", part)
                     if piece) for part in shlex.split(template)]  # the text around a placeholder is quoted too
    return ENGINE_SH.format(cache=shlex.quote(cache), command=" ".join(parts))
