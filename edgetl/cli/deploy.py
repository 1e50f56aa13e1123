"""`edgetl deploy`, `edgetl install` and `edgetl selftest`.

`deploy` parses its flags into a destination (this machine, SSH targets or an offline bundle), calls
the one function of `edgetl.deploy` for its mode and renders the result. Only the export of a
missing artifact happens here: the deploy library never imports an exporter (nor torch).
"""

from __future__ import annotations

import functools

import click

from edgetl.cli.common import fail, json_option, max_drop_option, percent, renamed_option, table, threads_option
from edgetl.deploy.target import HOST_TIMEOUT, STALL_TIMEOUT

SSH_SETTINGS = ("port", "identity", "known_hosts", "accept_new_host_key", "path", "python", "timeout", "stall_timeout",
                "host_timeout")
SSH_OPTIONS = (
    click.option("--host", "host_spec", help="[USER@]HOST of the device (SSH)."),
    click.option("--port", type=int, default=22, show_default=True, help="SSH port of the device."),
    click.option("--identity", type=click.Path(dir_okay=False), help="SSH private key (never logged)."),
    click.option("--known-hosts", type=click.Path(dir_okay=False),
                 help="known_hosts file (default ~/.ssh/known_hosts)."),
    click.option("--accept-new-host-key", is_flag=True,
                 help="Trust and record an unknown host key (never a changed one)."),
    click.option("--hosts", "inventory", type=click.Path(dir_okay=False),
                 help="Inventory YAML: deploy to a fleet in parallel."),
    click.option("--path", help="Install folder on the device (default: the profile's install_path)."),
    click.option("--python", help="Python on the device for the release venv (default: pythonX.Y of the profile)."),
    click.option("--timeout", type=float, default=15, show_default=True, help="Seconds to reach a device."),
    click.option("--stall-timeout", type=click.FloatRange(min=0, min_open=True), default=STALL_TIMEOUT,
                 show_default=True,
                 help="Seconds a file upload may make no progress before that device fails."),
    click.option("--host-timeout", type=click.FloatRange(min=0, min_open=True), default=HOST_TIMEOUT, show_default=True,
                 help="Seconds for one device's whole deploy (upload, install, self-test, switch)."),
)


def ssh_options(command):
    """The SSH flags; the settings every device shares arrive as one `ssh` dict (`SSH_SETTINGS`)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        return command(*args, ssh={name: kwargs.pop(name) for name in SSH_SETTINGS}, **kwargs)

    for option in reversed(SSH_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


@click.command(short_help="Ship a model to a device profile: bundle, install, self-test, switch, roll back.")
@click.argument("source", required=False, type=click.Path())
@click.option("--profile", "profile_name", help="Device profile (`edgetl devices list`).")
@renamed_option("--device", "--profile", "profile_name")
@click.option("--local", "local_path", type=click.Path(file_okay=False), help="Install on this machine under PATH.")
@click.option("--bundle-only", type=click.Path(dir_okay=False), help="Only write the offline bundle (.tar.gz).")
@click.option("--mender-artifact", type=click.Path(dir_okay=False), help="Write the bundle as a Mender artifact "
              "(payload type edgetl) for a Mender-managed fleet, instead of deploying.")
@click.option("--mender-device-type", "mender_device_types", multiple=True, metavar="NAME",
              help="A device type the Mender artifact is for (default: the profile's name). Repeatable.")
@click.option("--sign-key", type=click.Path(dir_okay=False), help="With --mender-artifact: sign it with this "
              "Mender signing key (RSA, or ECDSA P-256 in SEC1 PEM form).")
@ssh_options
@click.option("--rollback", is_flag=True, help="Switch the device back to its previous release.")
@click.option("--samples", type=int, default=50, show_default=True, help="Held-out images shipped for the self-test.")
@threads_option("the profile's", best=True, note="For the self-test and the service.")
@click.option("--pick", type=click.Choice(["fastest"]), help="Measure every artifact of the run within --max-drop "
              "on the device and ship the fastest.")
@max_drop_option("With --pick: the largest test-top-1 drop (pp, from each artifact's parity.json) to consider.",
                 none_means="every artifact with a parity summary")
@click.option("--camera-env", type=click.Path(dir_okay=False), help="A file (mode 0600) of KEY=VALUE lines for the "
              "service, e.g. EDGETL_SOURCE=rtsp://user:pass@cam/stream: installed as ROOT/edgetl.env (0600) and "
              "read through EnvironmentFile=, so secrets stay out of the bundle, the unit and `ps`.")
@json_option
def deploy(source, profile_name, local_path, bundle_only, mender_artifact, mender_device_types, sign_key, host_spec,
           inventory, ssh, rollback, samples, threads, pick, max_drop, camera_env):
    """Deploy SOURCE (a run directory or an artifact folder) to a device.

    The bundle carries the artifact the profile prefers (exported on the fly if missing), its
    sidecar and golden samples, held-out images, edgetl and every dependency as wheels for the
    device's platform, install.sh and a systemd unit. Installing verifies every sha256, installs
    into the release's own environment with no network, runs the self-test, and only then
    switches `current` atomically; any failure leaves the previous release in place.
    """
    from pathlib import Path

    from edgetl.deploy import actions
    from edgetl.deploy.service import read_env_file
    from edgetl.deploy.target import LocalTarget

    if rollback:
        return _rolled_back(actions.roll_back(_rollback_target(local_path, host_spec, ssh)))
    profile = _profile(source, profile_name, local_path or bundle_only or mender_artifact or host_spec or inventory)
    secrets = read_env_file(camera_env) if camera_env else None
    if pick:
        from edgetl.deploy.pick import pick_fastest

        target = _pick_target(local_path, host_spec, bundle_only or inventory, ssh, profile)
        return _picked(pick_fastest(Path(source), profile, target, samples, threads, max_drop, secrets), profile,
                       max_drop)
    artifact = artifact_for(Path(source), profile)
    if bundle_only:
        return _bundle_written(actions.bundle_only(artifact, profile, bundle_only, samples))
    if mender_artifact:
        return _mender_written(actions.mender_artifact(artifact, profile, mender_artifact, samples,
                                                       list(mender_device_types), sign_key))
    if host_spec or inventory:
        targets = _ssh_targets(host_spec, inventory, ssh, profile.install_path)
        return _fleet_verdict(actions.ship_fleet(artifact, profile, targets, samples, threads, secrets), profile.name)
    return _installed(actions.ship_local(artifact, profile, LocalTarget(local_path), samples, threads, secrets),
                      profile.name)


# -- parsing: flags into a profile and targets ---------------------------------------------------
def _profile(source, name, destination):
    from edgetl.deploy.profiles import get_profile
    from edgetl.errors import BadInputError

    if not source or not name:
        raise BadInputError("deploy needs SOURCE (run or artifact) and --profile PROFILE",
                            "e.g. edgetl deploy runs/my-run --profile rpi5 --bundle-only rpi5.tar.gz")
    if not destination:
        raise BadInputError("say where to deploy: --host, --hosts, --local PATH, --bundle-only OUT.tar.gz or "
                            "--mender-artifact OUT.mender")
    return get_profile(name)


def _ssh_targets(host_spec, inventory, ssh, default_path):
    """Every SSH target, from the inventory's entries (or the one --host) over the flags' settings."""
    from edgetl.deploy.fleet import parse_target, read_inventory
    from edgetl.deploy.target import ssh_targets

    if inventory:
        entries = read_inventory(inventory)
    else:
        user, host = parse_target(host_spec)
        entries = [{"host": host, "user": user}]
    return ssh_targets(entries, {**ssh, "path": ssh["path"] or default_path})


def _rollback_target(local_path, host_spec, ssh):
    from edgetl.deploy.target import LocalTarget
    from edgetl.errors import BadInputError

    if local_path:
        return LocalTarget(local_path)
    if not host_spec:
        raise BadInputError("--rollback needs the device: --host [USER@]HOST --path DIR, or --local PATH")
    if not ssh["path"]:
        raise BadInputError("--rollback over SSH needs --path (the install folder on the device)")
    return _ssh_targets(host_spec, None, ssh, None)[0]


def _pick_target(local_path, host_spec, elsewhere, ssh, profile):
    from edgetl.deploy.target import LocalTarget
    from edgetl.errors import BadInputError

    if elsewhere or not (local_path or host_spec):
        raise BadInputError("--pick measures on the device itself: give one device with --local PATH or --host",
                            "for a fleet or an offline bundle, pick on one device first, then deploy that artifact")
    return LocalTarget(local_path) if local_path else _ssh_targets(host_spec, None, ssh, profile.install_path)[0]


def artifact_for(source, profile):
    """The artifact to ship: looked up, and when the run has none for the profile, exported here (the CLI
    may run an exporter; the deploy library may not), then chosen."""
    from edgetl.console import info
    from edgetl.deploy.bundle import choose_artifact, find_artifact

    found = find_artifact(source, profile)
    if found is not None:
        return found
    from edgetl.export import export_run

    target = profile.preferred
    info(f"exporting {target.format} {target.precision} for {profile.name} ...")
    export_run(source, [target.format], [target.precision])
    return choose_artifact(source, profile)


# -- rendering --------------------------------------------------------------------------------
def _rolled_back(result):
    from edgetl.console import say

    say(f"rolled back {result['host']}:{result['path']}: current is now {result['release']} "
        f"(was {result['previous_release']})")
    return result


def _bundle_written(result):
    from edgetl.console import say

    say(f"bundle {result['bundle']} for {result['device']}: {result['path']} "
        f"({result['files']} files, {len(result['wheels'])} wheels)")
    return result


def _mender_written(result):
    from edgetl.console import say

    say(f"Mender artifact {result['artifact']}: {result['name']}, payload type {result['payload_type']}, for "
        f"{', '.join(result['device_types'])}{', signed' if result['signed'] else ', unsigned'}; installs under "
        f"{result['root']} through the update module {result['update_module']} (put it on the device as "
        "/usr/share/mender/modules/v3/edgetl)")
    return result


def _golden(result):
    return f"{result['self_test']['golden']['matched']}/{result['self_test']['golden']['total']}"


def _installed(result, profile_name):
    from edgetl.console import say, warn

    bench = result["bench"] or {}
    table(f"deployed {result['release']} to {result['path']} ({profile_name})",
          ["self-test", "golden", "accuracy", "p50 ms", "p99 ms", "FPS", "previous"],
          [["passed" if result["self_test"]["passed"] else "FAILED", _golden(result), percent(result["accuracy"]),
            bench.get("p50_ms"), bench.get("p99_ms"), bench.get("fps"), result["previous_release"]]])
    if result.get("threads_sweep"):
        say("thread sweep on the device (p50 ms): "
            + ", ".join(f"{row['threads']}: {row['p50_ms']}" for row in result["threads_sweep"])
            + f"; fastest {result['recommended_threads']}, the service runs {result['service_threads']}")
    for message in result.get("warnings", []):  # what the device's state did to the self-test bench
        warn(message)
    return result


def _fleet_verdict(rows, profile_name):
    """The fleet's table; one row's result (one device) or {"hosts": rows}, or a failure carrying it."""
    from edgetl.errors import CheckFailedError

    table(f"deploy ({profile_name})", ["host", "result", "release", "golden", "accuracy", "p50 ms", "p99 ms",
                                       "previous"],
          [[r["host"], "ok" if r["ok"] else f"FAILED: {r['error']}", r.get("release"), _golden(r) if r["ok"] else None,
            percent(r.get("accuracy")), (r.get("bench") or {}).get("p50_ms"), (r.get("bench") or {}).get("p99_ms"),
            r.get("previous_release")] for r in rows])
    result = rows[0] if len(rows) == 1 else {"hosts": rows}
    failed = [r for r in rows if not r["ok"]]
    if not failed:
        return result
    if len(rows) == 1:  # one device: its own error, hint and exit code (2 for a refused host key)
        error = CheckFailedError(f"deploy to {failed[0]['host']} failed: {failed[0]['error']}", failed[0].get("hint"))
        error.exit_code = failed[0].get("exit_code", 1)
        fail(error, result)
    fail(CheckFailedError(f"deploy failed on {len(failed)} of {len(rows)} host(s): "
                          + "; ".join(f"{r['host']}: {r['error']}" for r in failed)), result)


def _picked(result, profile, max_drop):
    measured, chosen = result["pick"]["measured"], result["pick"]["chosen"]
    bound = f"within {max_drop} pp" if max_drop is not None else "with no drop bound"
    table(f"--pick fastest on {result['host']} ({profile.name}), {bound}",
          ["artifact", "on-device p50 ms", "accuracy", "result"],
          [[m["artifact"], m.get("p50_ms"), percent(m.get("accuracy")),
            "deployed" if m["artifact"] == chosen else (m.get("error") or "slower")] for m in measured]
          + [[x["artifact"], None, None, f"left out: {x['reason']}"] for x in result["pick"]["left_out"]])
    return result


# -- the device side ----------------------------------------------------------------------------
@click.command(short_help="Install an unpacked bundle on this device (what the offline install.sh runs).")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("--root", required=True, type=click.Path(file_okay=False), help="Install folder (releases/, current).")
@threads_option("the profile's", note="For the self-test bench.")
@click.option("--allow-unsigned", is_flag=True, help="Install a bundle without a signature. Its origin is then "
              "unverified: whoever can change its files and recompute SHA256SUMS can run code here.")
@click.option("--allow-downgrade", is_flag=True, envvar="EDGETL_ALLOW_DOWNGRADE",
              help="Install a bundle built before the current release (refused by default: a replayed old bundle "
              "is still validly signed).")
@click.option("--no-activate", is_flag=True, help="Install and self-test the release, but leave `current` as it is "
              "(switch later with `edgetl activate`).")
@json_option
def install(bundle, root, threads, allow_unsigned, allow_downgrade, no_activate):
    """Install BUNDLE under ROOT exactly as `edgetl deploy` does: verify, install, self-test, switch.

    `sh bundle/install.sh --root DIR` verifies SHA256SUMS, builds a temporary environment from the
    bundled wheels and runs this; the release gets its own environment, built with $PYTHON.
    """
    import os
    from pathlib import Path

    from edgetl.console import say
    from edgetl.deploy.local import LocalDevice, install_release

    if allow_unsigned:
        os.environ["EDGETL_ALLOW_UNSIGNED"] = "1"  # read by the release's install.sh
    result = install_release(Path(bundle), root, device=LocalDevice(python=os.environ.get("PYTHON")), threads=threads,
                             allow_downgrade=allow_downgrade, activate=not no_activate)
    say(f"installed {result['release']} under {result['path']}: self-test passed "
        f"(golden {_golden(result)}, accuracy {percent(result['accuracy'])}), service {result['service']}")
    return result


@click.command(short_help="Switch this device to an installed release: restart, health window, or switch back.")
@click.argument("release")
@click.option("--root", required=True, type=click.Path(file_okay=False), help="Install folder (releases/, current).")
@json_option
def activate(release, root):
    """Make RELEASE (installed under ROOT/releases, self-tested) current: switch atomically, restart the service,
    wait for its health window; a release that does not prove healthy is switched back and recorded bad."""
    from edgetl.console import say
    from edgetl.deploy.rollback import activate_installed

    result = activate_installed(root, release)
    say(f"{result['release']} is current under {result['path']} (was {result['previous_release']}), "
        f"service {result['service']}")
    return result


@click.command(short_help="Self-test an installed release: checksums, golden samples, bench, accuracy.")
@click.argument("release", type=click.Path(exists=True, file_okay=False))
@threads_option("the release profile's", note="For the bench.")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed runs of the on-device bench.")
@json_option
def selftest(release, threads, runs):
    """Check RELEASE on this device: every file against the manifest, golden samples, latency, accuracy."""
    from edgetl.console import say
    from edgetl.deploy.selftest import self_test
    from edgetl.errors import CheckFailedError

    result = self_test(release, threads=threads, runs=runs)
    say(f"self-test {'passed' if result['passed'] else 'FAILED'}"
        + (f": {result['reason']}" if result.get("reason") else ""))
    if not result["passed"]:
        fail(CheckFailedError(f"self-test of {release} failed", result.get("reason")), result)
    return result
