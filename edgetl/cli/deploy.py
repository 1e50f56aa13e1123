"""`edgetl deploy` and `edgetl selftest`."""

from __future__ import annotations

import click

from edgetl.cli.common import json_option, percent, table


@click.command(short_help="Ship a model to a device profile: bundle, install, self-test, switch, roll back.")
@click.argument("source", required=False, type=click.Path())
@click.option("--device", "device_name", help="Device profile (`edgetl devices list`).")
@click.option("--local", "local_path", type=click.Path(file_okay=False), help="Install on this machine under PATH.")
@click.option("--bundle-only", type=click.Path(dir_okay=False), help="Only write the offline bundle (.tar.gz).")
@click.option("--host", "host_spec", help="[USER@]HOST of the device (SSH).")
@click.option("--port", type=int, default=22, show_default=True)
@click.option("--identity", type=click.Path(dir_okay=False), help="SSH private key (never logged).")
@click.option("--known-hosts", type=click.Path(dir_okay=False), help="known_hosts file (default ~/.ssh/known_hosts).")
@click.option("--accept-new-host-key", is_flag=True, help="Trust and record an unknown host key (never a changed one).")
@click.option("--hosts", "inventory", type=click.Path(dir_okay=False), help="Inventory YAML: deploy to a fleet in parallel.")
@click.option("--path", "remote_path", help="Install folder on the device (default: the profile's install_path).")
@click.option("--python", "device_python", help="Python on the device for the release venv (default: pythonX.Y "
                                               "of the profile).")
@click.option("--timeout", type=float, default=15, show_default=True, help="Seconds to reach a device.")
@click.option("--rollback", is_flag=True, help="Switch the device back to its previous release.")
@click.option("--samples", type=int, default=50, show_default=True, help="Held-out images shipped for the self-test.")
@click.option("--threads", help="Threads for the self-test and the service (default: the profile's), or 'best': "
              "the fastest of the self-test's thread sweep on each device.")
@click.option("--pick", type=click.Choice(["fastest"]), help="Measure every artifact of the run within --max-drop "
              "on the device and ship the fastest.")
@click.option("--max-drop", type=float, default=1.0, show_default=True,
              help="With --pick: the largest test-top-1 drop (pp, from each artifact's parity.json) to consider.")
@json_option
def deploy(source, device_name, local_path, bundle_only, host_spec, port, identity, known_hosts, accept_new_host_key,
           inventory, remote_path, device_python, timeout, rollback, samples, threads, pick, max_drop):
    """Deploy SOURCE (a run directory or an artifact folder) to a device.

    The bundle carries the artifact the profile prefers (exported on the fly if missing), its
    sidecar and golden samples, held-out images, edgetl and every dependency as wheels for the
    device's platform, install.sh and a systemd unit. Installing verifies every sha256, installs
    into the release's own environment with no network, runs the self-test, and only then
    switches `current` atomically; any failure leaves the previous release in place.
    """
    import tempfile
    from pathlib import Path

    from edgetl.console import console
    from edgetl.deploy.bundle import build_bundle, pack
    from edgetl.deploy.local import install_release, rollback as do_rollback
    from edgetl.deploy.profiles import get_profile
    from edgetl.errors import BadInputError

    threads, service_threads = _threads(threads)
    ssh = {"port": port, "identity": identity, "known_hosts": known_hosts, "accept_new_host_key": accept_new_host_key,
           "timeout": timeout, "python": device_python}
    if rollback:
        if local_path:
            result = do_rollback(Path(local_path))
        elif host_spec:
            from edgetl.deploy.fleet import parse_target
            from edgetl.deploy.ssh import SshDevice

            user, host = parse_target(host_spec)
            if not remote_path:
                raise BadInputError("--rollback over SSH needs --path (the install folder on the device)")
            device = SshDevice(host, port, user, identity, known_hosts, accept_new_host_key, timeout)
            try:
                result = do_rollback(remote_path, device)
            finally:
                device.close()
        else:
            raise BadInputError("--rollback needs the device: --host [USER@]HOST --path DIR, or --local PATH")
        console.print(f"rolled back {result['host']}:{result['path']}: current is now {result['release']} "
                      f"(was {result['previous_release']})")
        return result
    if not source or not device_name:
        raise BadInputError("deploy needs SOURCE (run or artifact) and --device PROFILE",
                            "e.g. edgetl deploy runs/my-run --device rpi5 --bundle-only rpi5.tar.gz")
    if not (local_path or bundle_only or host_spec or inventory):
        raise BadInputError("say where to deploy: --host, --hosts, --local PATH or --bundle-only OUT.tar.gz")
    profile = get_profile(device_name)
    if pick:
        return _pick(Path(source), profile, local_path, host_spec, remote_path, ssh, samples, (threads, service_threads),
                     max_drop, bundle_only or inventory)
    artifact = artifact_for(Path(source), profile)
    with tempfile.TemporaryDirectory(prefix="edgetl-bundle-") as tmp:
        bundle = Path(tmp) / "bundle"
        manifest = build_bundle(artifact, profile, bundle, samples=samples)
        if bundle_only:
            pack(bundle, Path(bundle_only))
            console.print(f"bundle {manifest['bundle']} for {profile.name}: {bundle_only} "
                          f"({len(manifest['files'])} files, {len(manifest['wheels'])} wheels)")
            return {"bundle": manifest["bundle"], "path": bundle_only, "device": profile.name,
                    "artifact": manifest["artifact"], "wheels": manifest["wheels"], "files": len(manifest["files"])}
        if host_spec or inventory:
            from edgetl.deploy.fleet import deploy_fleet, parse_target, read_inventory

            if inventory:
                hosts = read_inventory(inventory)
            else:
                user, host = parse_target(host_spec)
                hosts = [{"host": host, "user": user}]
            defaults = {**ssh, "path": remote_path or profile.install_path}
            rows = deploy_fleet(bundle, hosts, defaults, threads=threads, service_threads=service_threads)
            _fleet_table(rows, profile.name)
            failed = [r for r in rows if not r["ok"]]
            if failed:
                from edgetl.console import emit_json
                from edgetl.errors import CheckFailedError

                if click.get_current_context().params.get("as_json"):
                    emit_json(rows[0] if len(rows) == 1 else {"hosts": rows})
                if len(rows) == 1:  # one device: its own error, hint and exit code (2 for a refused host key)
                    error = CheckFailedError(f"deploy to {failed[0]['host']} failed: {failed[0]['error']}",
                                             failed[0].get("hint"))
                    error.exit_code = failed[0].get("exit_code", 1)
                    raise error
                raise CheckFailedError(f"deploy failed on {len(failed)} of {len(rows)} host(s): "
                                       + "; ".join(f"{r['host']}: {r['error']}" for r in failed))
            return rows[0] if len(rows) == 1 else {"hosts": rows}
        result = install_release(bundle, Path(local_path), threads=threads, service_threads=service_threads)
    bench = result["bench"] or {}
    table(f"deployed {result['release']} to {result['path']} ({profile.name})",
          ["self-test", "golden", "accuracy", "p50 ms", "p99 ms", "FPS", "previous"],
          [["passed" if result["self_test"]["passed"] else "FAILED",
            f"{result['self_test']['golden']['matched']}/{result['self_test']['golden']['total']}",
            percent(result["accuracy"]), bench.get("p50_ms"), bench.get("p99_ms"), bench.get("fps"),
            result["previous_release"]]])
    from edgetl.console import console, warn

    if result.get("threads_sweep"):
        console.print("thread sweep on the device (p50 ms): "
                      + ", ".join(f"{row['threads']}: {row['p50_ms']}" for row in result["threads_sweep"])
                      + f"; fastest {result['recommended_threads']}, the service runs {result['service_threads']}")
    for message in result.get("warnings", []):  # what the device's state did to the self-test bench
        warn(message)
    return result


def _pick(source, profile, local_path, host_spec, remote_path, ssh, samples, threads, max_drop, elsewhere):
    """--pick fastest: bundle every candidate, measure each on the one device, activate the fastest."""
    import tempfile
    from pathlib import Path

    from edgetl.deploy.bundle import build_bundle
    from edgetl.deploy.pick import candidates, pick_and_deploy
    from edgetl.errors import BadInputError

    if elsewhere or not (local_path or host_spec):
        raise BadInputError("--pick measures on the device itself: give one device with --local PATH or --host",
                            "for a fleet or an offline bundle, pick on one device first, then deploy that artifact")
    chosen, left_out = candidates(source, max_drop)
    device, root = None, local_path
    if host_spec:
        from edgetl.deploy.fleet import parse_target
        from edgetl.deploy.ssh import SshDevice

        user, host = parse_target(host_spec)
        device = SshDevice(host, ssh["port"], user, ssh["identity"], ssh["known_hosts"], ssh["accept_new_host_key"],
                           ssh["timeout"], python=ssh["python"])
        root = remote_path or profile.install_path
    try:
        with tempfile.TemporaryDirectory(prefix="edgetl-pick-") as tmp:
            bundles = []
            for number, artifact in enumerate(chosen):
                bundle = Path(tmp) / f"bundle-{number}"
                build_bundle(artifact, profile, bundle, samples=samples)
                bundles.append((artifact, bundle))
            result = pick_and_deploy(bundles, root, device, threads=threads[0], service_threads=threads[1])
    finally:
        if device is not None:
            device.close()
    result["pick"]["left_out"] = left_out
    measured = result["pick"]["measured"]
    table(f"--pick fastest on {result['host']} ({profile.name}), within {max_drop} pp",
          ["artifact", "on-device p50 ms", "accuracy", "result"],
          [[m["artifact"], m.get("p50_ms"), percent(m.get("accuracy")),
            "deployed" if m["artifact"] == result["pick"]["chosen"] else (m.get("error") or "slower")]
           for m in measured] + [[x["artifact"], None, None, f"left out: {x['reason']}"] for x in left_out])
    return result


def _threads(value):
    """--threads N -> (N, N); 'best' -> (None, 'best'); absent -> (None, None)."""
    from edgetl.errors import BadInputError

    if value is None or value == "best":
        return None, value
    if not str(value).isdigit() or int(value) < 1:
        raise BadInputError(f"--threads {value!r}: expected a positive whole number or 'best'")
    return int(value), int(value)


def artifact_for(source, profile):
    """The artifact to ship; a run with none for the profile is exported here, in the CLI, so that the
    deploy library never imports an exporter (nor torch)."""
    from edgetl.console import info
    from edgetl.deploy.bundle import NoArtifactError, choose_artifact

    try:
        return choose_artifact(source, profile)
    except NoArtifactError as missing:
        from edgetl.export import export_run

        info(f"exporting {missing.format} {missing.precision} for {profile.name} ...")
        export_run(source, [missing.format], [missing.precision])
        return choose_artifact(source, profile)


def _fleet_table(rows: list[dict], profile: str) -> None:
    table(f"deploy ({profile})", ["host", "result", "release", "golden", "accuracy", "p50 ms", "p99 ms", "previous"],
          [[r["host"], "ok" if r["ok"] else f"FAILED: {r['error']}", r.get("release"),
            f"{r['self_test']['golden']['matched']}/{r['self_test']['golden']['total']}" if r["ok"] else None,
            percent(r.get("accuracy")), (r.get("bench") or {}).get("p50_ms"), (r.get("bench") or {}).get("p99_ms"),
            r.get("previous_release")] for r in rows])


@click.command(short_help="Install an unpacked bundle on this device (what the offline install.sh runs).")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("--root", required=True, type=click.Path(file_okay=False), help="Install folder (releases/, current).")
@click.option("--threads", type=int, help="Threads for the self-test bench (default: the profile's).")
@json_option
def install(bundle, root, threads):
    """Install BUNDLE under ROOT exactly as `edgetl deploy` does: verify, install, self-test, switch.

    `sh bundle/install.sh --root DIR` verifies SHA256SUMS, builds a temporary environment from the
    bundled wheels and runs this; the release gets its own environment, built with $PYTHON.
    """
    import os
    from pathlib import Path

    from edgetl.console import console
    from edgetl.deploy.local import LocalDevice, install_release

    result = install_release(Path(bundle), root, device=LocalDevice(python=os.environ.get("PYTHON")), threads=threads)
    console.print(f"installed {result['release']} under {result['path']}: self-test passed "
                  f"(golden {result['self_test']['golden']['matched']}/{result['self_test']['golden']['total']}, "
                  f"accuracy {percent(result['accuracy'])}), service {result['service']}")
    return result


@click.command(short_help="Self-test an installed release: checksums, golden samples, bench, accuracy.")
@click.argument("release", type=click.Path(exists=True, file_okay=False))
@click.option("--threads", type=int, help="Inference threads for the bench (default: the release profile's).")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed runs of the on-device bench.")
@json_option
def selftest(release, threads, runs):
    """Check RELEASE on this device: every file against the manifest, golden samples, latency, accuracy."""
    from edgetl.console import console
    from edgetl.deploy.selftest import self_test

    result = self_test(release, threads=threads, runs=runs)
    console.print(f"self-test {'passed' if result['passed'] else 'FAILED'}"
                  + (f": {result['reason']}" if result.get("reason") else ""))
    if not result["passed"]:
        from edgetl.console import emit_json
        from edgetl.errors import CheckFailedError

        if click.get_current_context().params.get("as_json"):
            emit_json(result)
        raise CheckFailedError(f"self-test of {release} failed", result.get("reason"))
    return result
