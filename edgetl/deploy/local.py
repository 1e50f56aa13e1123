"""Installing a bundle as a release, switching to it atomically, and rolling back.

    ROOT/releases/<id>.partial/   while uploading, verifying, installing and self-testing
    ROOT/releases/<id>/           a release that passed its self-test (has manifest.json)
    ROOT/current -> releases/<id> switched with one rename of a fresh symlink: atomic
    ROOT/state.json               current, previous, history, releases proven good or bad (state.py)
    ROOT/edgetl.service           the systemd unit, written for this ROOT
    ROOT/.deploy.lock             held (flock) by the one deploy or rollback at work
    ROOT/.edgetl                  edgetl's marker (atomic.MARKER, kind "deploy-root"), from the first deploy

edgetl only works in a root it made. A missing or empty root is marked on the first deploy; a
root without the marker whose `current` links to releases/X, where X's manifest.json names X, is
an earlier edgetl's and is adopted (marked); any other non-empty root is refused before anything
is written there. Inside a root, pruning and cleanup touch only release folders whose
manifest.json names them (`<id>` or `<id>.partial`: the deploy writes the manifest first).

The steps are written once against a small `Device` interface (run a command, upload a
folder, read/write a small file, hold a lock), so `--local` and SSH deploys do exactly
the same thing. What a crash at any step leaves (kill -9 included):

- before the switch: the previous release still serving, and a `.partial` folder that the
  next deploy deletes under the lock; a `.partial` is never a rollback target;
- after the switch: the new, self-tested release, its data synced before `current` moved.

A restart of the service that fails is a failed deploy: `current` goes back and the release is
recorded bad. `rollback.py` goes back to the newest release recorded good, once it proves intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path, PurePosixPath

from edgetl import atomic
from edgetl.console import info, printable, warn
from edgetl.deploy.bundle import CHECKSUMS, MANIFEST
from edgetl.deploy import signing
from edgetl.deploy.health import restart_and_prove, restart_service
from edgetl.deploy.lock import device_lock
from edgetl.deploy.service import ENV_FILE, SERVICE_NAME, env_sets_source, plain_path, service_unit
from edgetl.deploy.state import last_good, mark, read_state, write_state
from edgetl.errors import BadInputError, CheckFailedError

KEEP_RELEASES = 3
RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
ROOT_KIND = "deploy-root"
OWNED = ('owned() { [ -f "$1/manifest.json" ] && grep -qF "\\"bundle\\": \\"$(basename "${1%.partial}")\\"" '
         '"$1/manifest.json"; }; ')
"""Shell: `owned DIR` succeeds when DIR's manifest.json names DIR (without .partial): edgetl's release."""
FAULT_ENV = "EDGETL_FAULT_AT"
"""Fault injection for the crash tests: the deploying process kills itself (SIGKILL) at this step."""


class LocalDevice:
    """This machine as the device (`--local PATH`)."""

    name = "local"

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable

    def run(self, argv: list[str], check: bool = False, timeout: float | None = None) -> subprocess.CompletedProcess:
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise CheckFailedError(f"{argv[0]} did not finish within {timeout:.0f} s on {self.name}") from exc
        if check and result.returncode != 0:
            raise CheckFailedError(f"{argv[0]} failed on {self.name}: {_last_line(result.stderr)}")
        return result

    def spawn(self, argv: list[str]) -> "LocalProcess":
        """A process that lives until `.close()` (or until this one dies): holds the deploy lock."""
        return LocalProcess(argv)

    def upload(self, bundle: Path, target: str) -> None:
        shutil.copytree(bundle, target, dirs_exist_ok=True)

    def read_text(self, path: str) -> str | None:
        return Path(path).read_text() if Path(path).is_file() else None

    def write_text(self, path: str, text: str, mode: int | None = None) -> None:
        from edgetl import atomic

        atomic.write_text(path, text, mode)

    def close(self) -> None:
        pass


class LocalProcess:
    """A child whose standard input we hold open; closing it (or our death) ends the child."""

    def __init__(self, argv: list[str]):
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.stdout, self.stderr = self.process.stdout, self.process.stderr

    def wait(self) -> int:
        return self.process.wait(timeout=30)

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            for stream in (self.process.stdout, self.process.stderr):
                stream.close()


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or ["(no output)"])[-1]


def _fault(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def resolve_root(root: Path | str, device) -> str:
    if isinstance(device, LocalDevice):
        root = Path(root).expanduser().resolve()
    return plain_path(str(root))


def current_release(root: Path | str, device=None) -> str | None:
    device = device or LocalDevice()
    result = device.run(["readlink", str(PurePosixPath(root) / "current")])
    name = PurePosixPath(result.stdout.strip()).name if result.returncode == 0 else ""
    return name if RELEASE_ID.fullmatch(name) else None


def switch(device, root: str, release: str) -> None:
    """Point `current` at releases/<release>: a fresh symlink (unique name) renamed over the old one."""
    tmp = f"{root}/.current.{secrets.token_hex(4)}.tmp"
    device.run(["ln", "-sfn", f"releases/{release}", tmp], check=True)
    device.run(["mv", "-Tf", tmp, f"{root}/current"], check=True)
    device.run(["sync"])


def releases(device, root: str) -> list[str]:
    """Finished releases, oldest first: folders with a release id whose manifest names them; nothing else
    counts (a folder of someone else's, even one with a manifest.json, is never a target or pruned)."""
    script = (f"{OWNED}cd {shlex.quote(root + '/releases')} 2>/dev/null || exit 0; "
              "for d in */; do d=${d%/}; owned \"$d\" && printf '%s\\n' \"$d\"; done; exit 0")
    listed = device.run(["sh", "-c", script]).stdout.splitlines()
    return sorted(n for n in listed if RELEASE_ID.fullmatch(n) and not n.endswith(".partial"))


def _clean_leftovers(device, root: str, resume: str | None = None) -> None:
    """What killed deploys left (we hold the lock): `.partial` releases whose manifest names them, but the
    one of `resume` (the release being installed again: its upload resumes), and temporary links and
    state files."""
    mine = shlex.quote(f"releases/{resume}.partial")
    script = (f"{OWNED}cd {shlex.quote(root)} 2>/dev/null || exit 0; "
              f"for d in releases/*.partial; do [ \"$d\" = {mine} ] || {{ owned \"$d\" && rm -rf \"$d\"; }}; done; "
              "rm -f .current.*.tmp state.json.*.tmp; exit 0")
    device.run(["sh", "-c", script])


ROOT_PROBE = """cd {root} 2>/dev/null || {{ [ -e {root} ] && echo notdir || echo empty; exit 0; }}
other=0
for e in .[!.]* ..?* *; do
  [ -e "$e" ] || [ -L "$e" ] || continue
  case $e in .deploy.lock|trusted-keys) ;; releases) [ -z "$(ls -A releases)" ] || other=1 ;; *) other=1 ;; esac
done
[ $other = 0 ] && {{ echo empty; exit 0; }}
case $(readlink current) in releases/*) release=$(readlink current) ;; *) echo foreign; exit 0 ;; esac
owned "$release" && echo earlier || echo foreign
"""
"""What ROOT is: `empty` (missing, or only an empty releases/ and a lock), `earlier` (an edgetl install
from before the marker: `current` -> releases/X, X's manifest names X), `notdir` or `foreign`."""


def claim_root(device, root: str, create: bool = True) -> None:
    """Make sure `root` is edgetl's before anything is written there: marked, or marked now when empty
    (`create`) or an earlier edgetl's; any other folder is refused with one line."""
    if atomic.is_marker(device.read_text(f"{root}/{atomic.MARKER}"), ROOT_KIND):
        return
    verdict = device.run(["sh", "-c", OWNED + ROOT_PROBE.format(root=shlex.quote(root))]).stdout.strip()
    if verdict == "empty" and not create:
        return
    if verdict in ("empty", "earlier"):
        device.run(["mkdir", "-p", root], check=True)
        device.write_text(f"{root}/{atomic.MARKER}", atomic.marker_text(ROOT_KIND))
        if verdict == "earlier":
            info(f"{device.name}:{root} is an earlier edgetl's install folder: marked it ({atomic.MARKER})")
        return
    what = "is not a folder" if verdict == "notdir" else "is not empty and was not made by edgetl"
    raise BadInputError(f"{device.name}:{root} {what} (no {atomic.MARKER} marker): refusing to deploy into it",
                        "choose a new or empty folder (--path on the device, --local here)")


def _prune(device, root: str, keep: int, state: dict) -> None:
    """Delete the oldest releases beyond `keep`; never current, previous, or the rollback target."""
    installed = releases(device, root)
    protected = {state.get("current"), state.get("previous"), last_good(state, installed, state.get("current"))}
    for old in installed[:-keep]:
        if old not in protected:
            device.run(["rm", "-rf", f"{root}/releases/{old}"])


def read_manifest(bundle: Path) -> dict:
    try:
        manifest = json.loads((bundle / MANIFEST).read_text())
        release = manifest["bundle"]
        manifest["profile"]["python"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BadInputError(f"{bundle} is not a complete edgetl bundle ({MANIFEST}: {exc})",
                            "rebuild it with `edgetl deploy RUN --profile NAME --bundle-only OUT`") from exc
    if not isinstance(release, str) or not RELEASE_ID.fullmatch(release) or release.endswith(".partial"):
        raise BadInputError(f"{bundle}: bundle id {release!r} is not a plain release name")
    return manifest


def self_test_release(device, release_dir: str, threads: int | None, runs: int | None = None) -> dict:
    command = [f"{release_dir}/venv/bin/python", "-m", "edgetl", "selftest", release_dir, "--json", "--quiet"]
    if threads:
        command += ["--threads", str(threads)]
    if runs:
        command += ["--runs", str(runs)]
    result = device.run(command, timeout=900)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise CheckFailedError(f"self-test could not run on {device.name}: {_last_line(result.stderr)}") from None
    if not isinstance(report, dict) or not report.get("passed"):
        reason = report.get("reason", "see the report") if isinstance(report, dict) else "unreadable report"
        raise CheckFailedError(f"self-test of {PurePosixPath(release_dir).name} failed on {device.name}: "
                               f"{printable(reason)}")  # the device's words: one line, escapes visible
    return report


def verify_checksums(device, folder: str) -> None:
    checked = device.run(["sh", "-c", f"cd {shlex.quote(folder)} && sha256sum --quiet -c {CHECKSUMS}"], timeout=600)
    if checked.returncode != 0:
        bad = [line.split(":")[0] for line in checked.stdout.splitlines() if "FAILED" in line]
        raise CheckFailedError(f"checksum mismatch on {device.name} in {len(bad) or 'some'} file(s) of "
                               f"{PurePosixPath(folder).name}" + (f", e.g. {bad[0]}" if bad else ""),
                               "the files were corrupted in transit or on disk; deploy again")


def trust_first_key(device, root: str, bundle: Path) -> None:
    """Trust the bundle's signer in a root that trusts no key yet, once its signature verifies here: the
    first contact, as SSH's known_hosts learns a host's key (over SSH, an authenticated connection; the
    deployer signed the bundle it just built). A root that trusts keys already is left as it is:
    install.sh then checks the bundle against those."""
    public_pem = signing.bundle_signer(bundle)
    if not public_pem or not signing.can_verify() or not signing.verify_bundle_signature(bundle, public_pem.encode()):
        return
    listed = device.run(["sh", "-c", f"ls {shlex.quote(root + '/' + signing.TRUSTED_KEYS)} 2>/dev/null; exit 0"])
    if any(re.fullmatch(r"[0-9a-f]{16}\.pem", name) for name in listed.stdout.split()):
        return
    device.run(["mkdir", "-p", f"{root}/{signing.TRUSTED_KEYS}"], check=True)
    device.write_text(signing.trusted_key_path(root, public_pem), public_pem)
    info(f"{device.name}:{root} now trusts bundles signed by key {signing.key_id(public_pem)}")


def built_at(release: str | None) -> str | None:
    """A release's build time as its id begins (YYYYMMDD-HHMMSS, UTC): the bundle's version, which only
    grows. None for an id edgetl did not make."""
    match = re.match(r"(\d{8}-\d{6})-", release or "")
    return match.group(1) if match else None


def refuse_downgrade(device, release: str, current: str | None) -> None:
    """No silent downgrade: a bundle built before the current release is refused (a replayed old bundle
    is still validly signed). Going back on purpose is `--rollback` or `--allow-downgrade`."""
    new, old = built_at(release), built_at(current)
    if new and old and new < old:
        raise BadInputError(f"{release} was built before {current}, the current release on {device.name}: refusing "
                            "to downgrade", "go back with `edgetl deploy --rollback`, or pass --allow-downgrade to "
                            "install this older bundle (a clock set wrong on the building machine does this too)")


def install_release(bundle: Path, root: Path | str, device=None, keep: int = KEEP_RELEASES,
                    threads: int | None = None, activate: bool = True, service_threads: int | str | None = None,
                    allow_downgrade: bool = False, camera_env: str | None = None) -> dict:
    """Upload, verify, install, self-test and switch; returns the deploy result.

    `activate=False` stops after the self-test: the release is complete in releases/ but not
    current (what `--pick` measures each candidate with before it activates the fastest).
    `service_threads` sets the camera service's --threads: a count, or "best" for the self-test's
    thread sweep's fastest on this device (default: the profile's). A root that trusts no signing key
    yet trusts the bundle's signer (`trust_first_key`). `camera_env`: the service's secrets (KEY=VALUE lines,
    service.read_env_file), written to ROOT/edgetl.env with mode 0600 before the switch."""
    device = device or LocalDevice()
    root = resolve_root(root, device)
    manifest = read_manifest(bundle)
    release = manifest["bundle"]
    partial, final = f"{root}/releases/{release}.partial", f"{root}/releases/{release}"
    claim_root(device, root)
    device.run(["mkdir", "-p", f"{root}/releases"], check=True)
    with device_lock(device, root):
        _clean_leftovers(device, root, resume=release)
        trust_first_key(device, root, bundle)
        previous = current_release(root, device)
        if release in releases(device, root):
            raise BadInputError(f"release {release} is already installed on {device.name}", "build a new bundle")
        if not allow_downgrade:
            refuse_downgrade(device, release, previous)
        device.run(["rm", "-rf", f"{partial}/venv"], check=True)  # a half-built environment is never reused
        device.run(["mkdir", "-p", partial], check=True)
        try:
            device.write_text(f"{partial}/{MANIFEST}", (bundle / MANIFEST).read_text())  # marks it edgetl's
            info(f"uploading release {release} to {device.name}:{root}")
            device.upload(bundle, partial)  # resumes: files already there with the right digest are kept
            _fault("uploaded")
            verify_checksums(device, partial)
            environment = _run_install_script(device, root, partial, manifest, previous)
            _fault("installed")
            report = {**self_test_release(device, partial, threads), "environment": environment}
            _fault("self-tested")
            device.run(["sync"])  # the release is on disk before it can become current
            device.run(["mv", "-T", partial, final], check=True)
        except BaseException:
            with contextlib.suppress(Exception):  # on a lost link the partial stays; the next deploy resumes it
                device.run(["rm", "-rf", partial])
            raise
        _fault("finalized")
        if not activate:
            return _result(device, root, manifest, report, previous, "not activated")
        profile = service_profile(manifest["profile"], report, service_threads)
        service = activate_release(device, root, release, previous, profile, keep, camera_env=camera_env)
    return {**_result(device, root, manifest, report, previous, service), "service_threads": profile["threads"]}


def _run_install_script(device, root: str, partial: str, manifest: dict, previous: str | None) -> str:
    """The release's install.sh on the device; 'copied' when it reused the running release's environment
    (the same wheels), 'built' when pip made it from the bundle's wheels."""
    python = getattr(device, "python", None) or f"python{manifest['profile']['python']}"
    reuse = os.environ.get("EDGETL_VENV_FROM") if isinstance(device, LocalDevice) else None  # offline
    reuse = reuse or (f"{root}/current/venv" if previous else "")
    installed = device.run(["env", f"PYTHON={python}", f"EDGETL_VENV_FROM={reuse}", "sh", f"{partial}/install.sh"],
                           timeout=1800)
    if installed.returncode != 0:
        raise CheckFailedError(f"install failed on {device.name}: {_last_line(installed.stderr)}",
                               "check the bundle's wheels match the device's platform and Python")
    for line in installed.stderr.splitlines():  # what install.sh says the device lacks (e.g. Picamera2)
        if line.startswith("install.sh: "):
            warn(f"{device.name}: {printable(line[12:])[:300]}")
    return "copied" if "install.sh: environment copied" in installed.stdout else "built"


def service_profile(profile: dict, report: dict, threads: int | str | None) -> dict:
    """The profile the service unit is written from, with --threads best resolved on the device."""
    if threads == "best":
        threads = report.get("recommended_threads") or profile.get("threads")
    return {**profile, "threads": int(threads)} if threads else profile


def _result(device, root: str, manifest: dict, report: dict, previous: str | None, service: str) -> dict:
    return {"host": device.name, "path": root, "device": manifest["profile"]["name"], "release": manifest["bundle"],
            "self_test": {k: report[k] for k in ("passed", "integrity", "golden", "samples") if k in report},
            "bench": report.get("bench"), "accuracy": report.get("accuracy"), "previous_release": previous,
            "service": service, "environment": report.get("environment"), "device_state": report.get("device"),
            "warnings": report.get("warnings", []),
            "threads_sweep": report.get("threads_sweep"), "recommended_threads": report.get("recommended_threads")}


def activate_release(device, root: str, release: str, previous: str | None, profile: dict,
                     keep: int = KEEP_RELEASES, camera_env: str | None = None) -> str:
    """Make a complete, self-tested release current (under the device lock): switch, state, unit,
    service restart (switched back if it fails), pruning. Returns what happened to the service.
    `camera_env`: the service's secrets, written to ROOT/edgetl.env (0600) first; None keeps the file."""
    if camera_env is not None:
        device.write_text(f"{root}/{ENV_FILE}", camera_env, mode=0o600)
    switch(device, root, release)
    _fault("switched")
    state = read_state(device, root)
    state.update(current=release, previous=previous, history=[*state["history"], release][-20:])
    write_state(device, root, state)
    _fault("state-written")
    in_env = env_sets_source(device.read_text(f"{root}/{ENV_FILE}"))
    device.write_text(f"{root}/{SERVICE_NAME}", service_unit(profile, root, source_in_env=in_env))
    service = restart_and_prove(device, release, profile)
    if service.failure:
        _switch_back(device, root, release, previous, state)
        raise CheckFailedError(f"{SERVICE_NAME} {service.failure} on {device.name} with release {release} "
                               f"({service.text}); switched back to {previous or 'no release'}",
                               f"see `journalctl -u {SERVICE_NAME}` on the device")
    write_state(device, root, mark(state, release, good=True))
    _prune(device, root, keep, state)
    return service.text


def _switch_back(device, root: str, release: str, previous: str | None, state: dict) -> None:
    if previous is None:
        device.run(["rm", "-f", f"{root}/current"])
    else:
        switch(device, root, previous)
    state.update(current=previous, previous=None, history=[h for h in state["history"] if h != release])
    write_state(device, root, mark(state, release, good=False))
    if previous is not None:
        restart_service(device)
