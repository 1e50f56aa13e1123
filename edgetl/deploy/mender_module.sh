#!/bin/sh
# edgetl's Mender update module (protocol v3), installed on the device as /usr/share/mender/modules/v3/edgetl.
# Mender runs it once per state as `edgetl STATE FILES_DIR`; the payload is an edgetl offline bundle
# (files/edgetl-bundle.tar.gz) and the release goes into the same ROOT/releases + current layout the
# SSH deploy uses:
#   ArtifactInstall   unpack, then the bundle's install.sh --stage: signature (ROOT/trusted-keys),
#                     SHA256SUMS, a venv from the bundled wheels, the self-test; `current` is untouched
#   ArtifactCommit    switch `current`, restart the service, wait for its health window (edgetl activate);
#                     a failure there switches back, records the release bad and fails the commit
#   ArtifactRollback  back to the release that was current before this artifact, if `current` moved
#   ArtifactFailure   the same: the device always ends on a release that runs
# ROOT is the artifact's meta-data "root" (the profile's install_path), or $EDGETL_MENDER_ROOT.
# Only POSIX sh, tar, readlink and the device's python3; every path is quoted.
set -eu
state=${1:-}
tree=${2:-}
python=${EDGETL_MENDER_PYTHON:-python3}
fail() { echo "edgetl update module: $*" >&2; exit 1; }

case $state in
  SupportsRollback) echo Yes; exit 0 ;;
  NeedsArtifactReboot) echo No; exit 0 ;;
  ArtifactInstall|ArtifactCommit|ArtifactRollback|ArtifactFailure|Cleanup|Download|ArtifactVerifyReboot|\
  ArtifactRollbackReboot|ArtifactVerifyRollbackReboot) ;;
  *) exit 0 ;;  # states added by later protocol versions: nothing to do
esac
[ -n "$tree" ] && [ -d "$tree" ] || fail "no files folder given for $state"
work="$tree/tmp"

root=${EDGETL_MENDER_ROOT:-}
if [ -z "$root" ]; then
  root=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("root", ""))' \
    "$tree/header/meta-data" 2>/dev/null || true)
fi
case $root in
  /*) ;;
  *) fail "no install root (the artifact's meta-data has none and EDGETL_MENDER_ROOT is unset)" ;;
esac
case $root in *[!A-Za-z0-9._+@/-]*|*/../*|*/..) fail "install root $root is not a plain path" ;; esac

current_release() { basename "$(readlink "$root/current" 2>/dev/null || echo none)"; }

activate() {  # activate RELEASE: switch, restart, health, through that release's own edgetl
  "$root/releases/$1/venv/bin/python" -m edgetl activate "$1" --root "$root" --quiet
}

back_to_previous() {
  new=$(cat "$work/release" 2>/dev/null || true)
  previous=$(cat "$work/previous" 2>/dev/null || true)
  [ -n "$new" ] && [ "$(current_release)" = "$new" ] || exit 0  # `current` never moved to this release
  if [ -n "$previous" ] && [ -d "$root/releases/$previous" ]; then
    activate "$previous"
  else
    rm -f "$root/current"
  fi
}

case $state in
  Download) exit 0 ;;  # Mender stores the payload in files/
  ArtifactInstall)
    rm -rf "$work/unpacked"
    mkdir -p "$work/unpacked"
    "$python" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
      "$tree/files/edgetl-bundle.tar.gz" "$work/unpacked" || fail "the payload is not an edgetl bundle archive"
    current_release > "$work/previous"
    [ "$(cat "$work/previous")" != none ] || : > "$work/previous"
    "$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["bundle"])' \
      "$work/unpacked/bundle/manifest.json" > "$work/release" || fail "the bundle has no readable manifest.json"
    sh "$work/unpacked/bundle/install.sh" --root "$root" --stage
    ;;
  ArtifactCommit)
    activate "$(cat "$work/release")"
    ;;
  ArtifactRollback|ArtifactFailure)
    back_to_previous
    ;;
  Cleanup)
    rm -rf "$work/unpacked"
    ;;
esac
exit 0
