"""`edgetl deploy` and `edgetl selftest`."""

from __future__ import annotations

import click

from edgetl.cli.common import json_option, percent, table


@click.command(short_help="Ship a model to a device profile: bundle, install, self-test, switch, roll back.")
@click.argument("source", required=False, type=click.Path())
@click.option("--device", "device_name", help="Device profile (`edgetl devices list`).")
@click.option("--local", "local_path", type=click.Path(file_okay=False), help="Install on this machine under PATH.")
@click.option("--bundle-only", type=click.Path(dir_okay=False), help="Only write the offline bundle (.tar.gz).")
@click.option("--rollback", is_flag=True, help="Switch the device back to its previous release.")
@click.option("--samples", type=int, default=50, show_default=True, help="Held-out images shipped for the self-test.")
@click.option("--threads", type=int, help="Threads for the self-test bench (default: the profile's).")
@json_option
def deploy(source, device_name, local_path, bundle_only, rollback, samples, threads):
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
    from edgetl.deploy.local import install_release
    from edgetl.deploy.local import rollback as do_rollback
    from edgetl.deploy.profiles import get_profile
    from edgetl.errors import BadInputError

    if rollback:
        if not local_path:
            raise BadInputError("--rollback needs the device: --local PATH")
        result = do_rollback(Path(local_path))
        console.print(f"rolled back {result['path']}: current is now {result['release']} "
                      f"(was {result['previous_release']})")
        return result
    if not source or not device_name:
        raise BadInputError("deploy needs SOURCE (run or artifact) and --device PROFILE",
                            "e.g. edgetl deploy runs/my-run --device rpi5 --bundle-only rpi5.tar.gz")
    if not (local_path or bundle_only):
        raise BadInputError("say where to deploy: --local PATH or --bundle-only OUT.tar.gz")
    profile = get_profile(device_name)
    with tempfile.TemporaryDirectory(prefix="edgetl-bundle-") as tmp:
        bundle = Path(tmp) / "bundle"
        manifest = build_bundle(Path(source), profile, bundle, samples=samples)
        if bundle_only:
            pack(bundle, Path(bundle_only))
            console.print(f"bundle {manifest['bundle']} for {profile.name}: {bundle_only} "
                          f"({len(manifest['files'])} files, {len(manifest['wheels'])} wheels)")
            return {"bundle": manifest["bundle"], "path": bundle_only, "device": profile.name,
                    "artifact": manifest["artifact"], "wheels": manifest["wheels"], "files": len(manifest["files"])}
        result = install_release(bundle, Path(local_path), threads=threads)
    bench = result["bench"] or {}
    table(f"deployed {result['release']} to {result['path']} ({profile.name})",
          ["self-test", "golden", "accuracy", "p50 ms", "p99 ms", "FPS", "previous"],
          [["passed" if result["self_test"]["passed"] else "FAILED",
            f"{result['self_test']['golden']['matched']}/{result['self_test']['golden']['total']}",
            percent(result["accuracy"]), bench.get("p50_ms"), bench.get("p99_ms"), bench.get("fps"),
            result["previous_release"]]])
    return result


@click.command(short_help="Self-test an installed release: checksums, golden samples, bench, accuracy.")
@click.argument("release", type=click.Path(exists=True, file_okay=False))
@click.option("--threads", type=int)
@click.option("--runs", type=int, default=50, show_default=True)
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
