#!/bin/sh
# MediaPipe's own Python environment, for tests/test_tflite_metadata.py: MediaPipe's ImageClassifier
# reads edgetl's TFLite artifacts there, in a venv of its own (its pins clash with edgetl's). Built once
# and cached outside any clone; prints the environment's python on the last line of stdout.
#
#   scripts/mediapipe_env.sh [DIR]     DIR: ${EDGETL_MEDIAPIPE_VENV:-$HOME/.cache/edgetl/mediapipe-venv}
#
# Idempotent: with a complete cache it does nothing (~1.5 min and ~650 MB the first time). The venv is
# built in a temporary sibling and renamed into place once mediapipe imports, so a killed build never
# leaves a folder that looks complete (only `bin/python` is used, which a renamed venv keeps working).
# Exit 0 with the path; 1 with one line on stderr saying what failed.
set -eu

version=${EDGETL_MEDIAPIPE_VERSION:-1.2.3}
dest=${1:-${EDGETL_MEDIAPIPE_VENV:-$HOME/.cache/edgetl/mediapipe-venv}}
marker=.edgetl-mediapipe-venv
python=${PYTHON:-python3}
probe="import mediapipe.tasks.python.vision"

fail() { echo "mediapipe_env.sh: $*" >&2; exit 1; }

if [ -f "$dest/$marker" ] && "$dest/bin/python" -c "$probe" 2>/dev/null; then
  echo "$dest/bin/python"
  exit 0
fi
mkdir -p "$(dirname "$dest")"
for old in "$dest".partial-*; do  # what killed builds left
  if [ -e "$old" ]; then rm -rf "$old"; fi
done
tmp="$dest.partial-$$"
trap 'rm -rf "$tmp"' EXIT
"$python" -m venv "$tmp" || fail "could not create a venv with $python"
"$tmp/bin/pip" install -q --disable-pip-version-check "mediapipe==$version" \
  || fail "pip could not install mediapipe==$version"
"$tmp/bin/python" -c "$probe" || fail "mediapipe==$version does not import"
echo "mediapipe==$version, built $(date -u +%FT%TZ) with $("$python" --version 2>&1)" > "$tmp/$marker"
rm -rf "$dest"  # an incomplete folder (no marker, or mediapipe no longer imports)
mv "$tmp" "$dest"
trap - EXIT
echo "$dest/bin/python"
