#!/bin/sh
# A Debian bookworm arm64 userland (Raspberry Pi OS's base: Python 3.11, glibc 2.36) that runs here
# under qemu-user: the aarch64 stand-in for a Raspberry Pi that tests/test_aarch64.py installs a Pi
# bundle into through chroot. Built once and cached; prints its path on the last line of stdout.
#
#   sudo scripts/arm64_rootfs.sh [DIR]     DIR: ${EDGETL_ARM64_ROOTFS:-$HOME/.cache/edgetl/arm64-bookworm}
#
# Idempotent. As root it installs what is missing from Debian (qemu-user-static, binfmt-support,
# debootstrap) with apt-get, mounts binfmt_misc if needed, enables qemu-aarch64, then debootstraps
# into a temporary sibling folder that is renamed into place only once complete (with a marker file
# saying how and when it was built): a killed build never leaves a folder that looks complete, and
# the next run deletes what it left. With a complete cache and qemu-aarch64 enabled it does nothing.
# EDGETL_ARM64_MIRROR overrides the Debian mirror (default: the one apt uses here).
# Exit 0 with the path; 1 with one line on stderr saying what is missing.
set -eu

dest=${1:-${EDGETL_ARM64_ROOTFS:-$HOME/.cache/edgetl/arm64-bookworm}}
MARKER=.edgetl-arm64-rootfs
BINFMT=/proc/sys/fs/binfmt_misc
SUITE=bookworm
PACKAGES=python3,python3-venv,openssl
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"

fail() { echo "arm64_rootfs.sh: $*" >&2; exit 1; }
note() { echo "arm64_rootfs.sh: $*" >&2; }

native=$([ "$(uname -m)" = aarch64 ] && echo yes || echo no)  # an arm64 host needs no emulation
binfmt_enabled() { [ "$native" = yes ] || { [ -r "$BINFMT/qemu-aarch64" ] && head -n 1 "$BINFMT/qemu-aarch64" | grep -qx enabled; }; }

# Complete cache, and this kernel runs aarch64 binaries: nothing to do (no root needed).
if [ -f "$dest/$MARKER" ] && binfmt_enabled; then
  echo "$dest"
  exit 0
fi

[ "$(id -u)" = 0 ] || fail "needs root (apt-get, binfmt_misc, debootstrap, chroot): run it with sudo"

# -- the tools, from Debian -------------------------------------------------------------------
missing=""
if [ "$native" = no ]; then
  [ -x /usr/bin/qemu-aarch64-static ] || missing="$missing qemu-user-static"
  command -v update-binfmts >/dev/null 2>&1 || missing="$missing binfmt-support"
fi
command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing="$missing debian-archive-keyring"
# Mounted before qemu-user-static is installed, its postinst registers the interpreter right away.
if [ "$native" = no ] && [ ! -e "$BINFMT/register" ]; then
  mount -t binfmt_misc binfmt_misc "$BINFMT" 2>/dev/null \
    || fail "cannot mount binfmt_misc on $BINFMT (a container without that privilege?): qemu-user cannot run arm64 binaries here"
fi
if [ -n "$missing" ]; then
  command -v apt-get >/dev/null 2>&1 || fail "missing$missing and there is no apt-get to install them"
  note "installing$missing with apt-get"
  log=$(mktemp)
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing) >"$log" 2>&1 \
    || { tail -n 5 "$log" >&2; rm -f "$log"; fail "apt-get could not install$missing"; }
  rm -f "$log"
fi
if ! binfmt_enabled; then
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || update-binfmts --import qemu-aarch64 >/dev/null 2>&1 || true
  binfmt_enabled || fail "qemu-aarch64 is not enabled in $BINFMT (update-binfmts --enable qemu-aarch64 failed)"
fi

if [ -f "$dest/$MARKER" ]; then
  echo "$dest"
  exit 0
fi
if [ -e "$dest" ] && [ -n "$(ls -A "$dest" 2>/dev/null)" ]; then
  fail "$dest exists but is not a complete rootfs (no $MARKER): remove it, or choose another folder"
fi

# -- the mirror apt already uses (deb822 .sources or one-line sources.list), else Debian's CDN ---
mirror=${EDGETL_ARM64_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v suite="$SUITE" '
    function flush() { if (!found && uris != "" && suites ~ ("(^| )" suite "( |$)") && types ~ /(^| )deb( |$)/) { split(uris, u, " "); print u[1]; found = 1; exit } uris = suites = types = "" }
    /^[[:space:]]*$/ { flush(); next }
    tolower($1) == "uris:" { $1 = ""; uris = $0; sub(/^ +/, "", uris) }
    tolower($1) == "suites:" { $1 = ""; suites = $0 " " }
    tolower($1) == "types:" { $1 = ""; types = $0 " " }
    END { flush() }')
fi
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk -v suite="$SUITE" '
    $1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ } if ($(i + 1) == suite) { print $i; exit } }')
fi
mirror=${mirror:-http://deb.debian.org/debian}

# -- build beside the destination, rename into place when complete ---------------------------
parent=$(dirname "$dest")
name=$(basename "$dest")
mkdir -p "$parent" 2>/dev/null || fail "cannot create $parent for the rootfs (set EDGETL_ARM64_ROOTFS to a writable folder)"
unmount_under() {  # what debootstrap (or a chroot) mounted under $1 and a kill left behind
  awk -v dir="$1/" 'index($2, dir) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r point; do
    umount -l "$point" 2>/dev/null || true
  done
}
exec 9>"$parent/.$name.lock"
flock 9  # one build at a time; a second run waits, then finds the cache complete
if [ -f "$dest/$MARKER" ]; then
  echo "$dest"
  exit 0
fi
for old in "$parent/.$name.build."*; do
  [ -e "$old" ] || continue
  [ -d "$old" ] && note "removing $old (a build that did not finish)"
  unmount_under "$old"
  rm -rf --one-file-system "$old"
done
build=$(mktemp -d "$parent/.$name.build.XXXXXX")
trap 'unmount_under "$build"; rm -rf --one-file-system "$build" "$build.log"' EXIT
trap 'exit 130' INT TERM HUP
command="debootstrap --arch=arm64 --variant=minbase --include=$PACKAGES $SUITE $dest $mirror"
started=$(date +%s)
note "building the arm64 $SUITE userland in $build from $mirror (about 6 minutes on 2 cores, once)"
chmod 755 "$build"
debootstrap --arch=arm64 --variant=minbase --include="$PACKAGES" "$SUITE" "$build" "$mirror" >"$build.log" 2>&1 || {
  tail -n 5 "$build.log" >&2
  rm -f "$build.log"
  fail "debootstrap failed (above: the end of its log)"
}
rm -f "$build.log"
# The interpreter is found through binfmt_misc; without the F flag it is opened inside the chroot.
[ "$native" = yes ] || grep -q '^flags:.*F' "$BINFMT/qemu-aarch64" || cp /usr/bin/qemu-aarch64-static "$build/usr/bin/"
machine=$(chroot "$build" /usr/bin/python3 -c 'import platform, venv; print(platform.machine())' 2>&1) || machine="failed: $machine"
[ "$machine" = aarch64 ] || fail "the new rootfs does not run Python as aarch64 ($machine)"
chroot "$build" apt-get clean >/dev/null 2>&1 || true
unmount_under "$build"
{
  echo "complete: $(date -u +%Y-%m-%dT%H:%M:%SZ) ($(($(date +%s) - started)) s)"
  echo "command: $command"
  echo "debootstrap: $(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null || echo unknown)"
  echo "python: $(chroot "$build" /usr/bin/python3 -c 'import sys; print(sys.version.split()[0])')"
} >"$build/$MARKER"
sync
mv -T "$build" "$dest"
trap - EXIT
note "built in $(($(date +%s) - started)) s"
echo "$dest"
