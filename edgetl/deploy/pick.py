"""`edgetl deploy --pick fastest --max-drop PP`: ship the fastest artifact within the drop, as measured
on that device.

Which artifact is fastest depends on the device (its CPU's int8 kernels, its runtime build, its
threads), so it is measured there, not guessed from the export host: every candidate is
installed as a complete release (verified, its own environment, self-tested with its on-device
bench) without becoming current; the one with the lowest on-device p50 is then activated like any
deploy, and the other candidates' releases, which this command made, are removed. A candidate
that fails its self-test is reported and skipped; if all fail, `current` is left as it was.

Candidates are the artifacts in a folder (a run's `export/`) whose own parity summary says their
test-top-1 drop is within `max_drop`; an artifact without one is left out, with the reason.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgetl.console import info, warn
from edgetl.contract.artifact import read_parity
from edgetl.contract.sidecar import SIDECAR_NAME
from edgetl.deploy.actions import split_threads
from edgetl.deploy.bundle import build_bundle
from edgetl.deploy.local import (LocalDevice, activate_release, claim_root, current_release, install_release,
                                 read_manifest, releases, resolve_root, service_profile)
from edgetl.deploy.lock import device_lock
from edgetl.deploy.profiles import DeviceProfile
from edgetl.deploy.target import LocalTarget, SshTarget, connected
from edgetl.errors import BadInputError, CheckFailedError, EdgetlError


def candidates(source: Path, max_drop: float | None) -> tuple[list[Path], list[dict]]:
    """(artifact folders within the drop, [{"artifact", "reason"}] for the ones left out); `max_drop` None
    bounds nothing, but a candidate still needs its parity summary."""
    folder = source / "export" if (source / "labels.json").is_file() else source
    found = sorted(p for p in folder.iterdir() if (p / SIDECAR_NAME).is_file()) if folder.is_dir() else []
    if not found:
        raise BadInputError(f"{source} holds no exported artifacts to pick from",
                            f"run `edgetl export {source}` and `edgetl parity {source}` first")
    chosen, left_out = [], []
    for artifact in found:
        summary = read_parity(artifact)
        if summary is None or summary.get("drop_pp") is None:
            why = "no parity.json" if summary is None else "its parity.json has no valid drop_pp"
            left_out.append({"artifact": artifact.name, "reason": f"{why}: run `edgetl parity` on it"})
        elif max_drop is not None and summary["drop_pp"] > max_drop:
            left_out.append({"artifact": artifact.name,
                             "reason": f"drop {summary['drop_pp']:.2f} pp > --max-drop {max_drop}"})
        else:
            chosen.append(artifact)
    if not chosen:
        raise CheckFailedError(f"no artifact in {folder} is within --max-drop {max_drop}: "
                               + "; ".join(f"{x['artifact']}: {x['reason']}" for x in left_out))
    return chosen, left_out


def pick_and_deploy(bundles: list[tuple[Path, Path]], root: Path | str, device=None,
                    threads: int | None = None, service_threads: int | str | None = None,
                    camera_env: str | None = None) -> dict:
    """Install each (artifact, bundle) without activating it, activate the fastest on the device."""
    device = device or LocalDevice()
    root = resolve_root(root, device)
    claim_root(device, root)
    device.run(["mkdir", "-p", f"{root}/releases"], check=True)
    with device_lock(device, root):  # the whole pick: nobody prunes a measured candidate before the switch
        return _measure_and_activate(bundles, root, device, threads, service_threads, camera_env)


def _measure_and_activate(bundles, root: str, device, threads, service_threads, camera_env) -> dict:
    measured = []
    for artifact, bundle in bundles:
        info(f"measuring {artifact.name} on {device.name} ...")
        try:
            result = install_release(bundle, root, device, threads=threads, activate=False)
        except EdgetlError as exc:
            warn(f"  {artifact.name}: {exc.message}")
            measured.append({"artifact": artifact.name, "error": exc.message})
            continue
        measured.append({"artifact": artifact.name, "release": result["release"],
                         "p50_ms": (result["bench"] or {}).get("p50_ms"), "accuracy": result["accuracy"],
                         "result": result})
    ok = [m for m in measured if m.get("p50_ms") is not None]
    if not ok:
        raise CheckFailedError(f"no candidate passed its self-test on {device.name}; current is unchanged: "
                               + "; ".join(f"{m['artifact']}: {m.get('error')}" for m in measured))
    best = min(ok, key=lambda m: m["p50_ms"])
    for other in ok:
        if other is not best:  # complete releases this command made and nobody switched to
            device.run(["rm", "-rf", f"{root}/releases/{other['release']}"], check=True)
    if best["release"] not in releases(device, root):  # never switch `current` to a folder that is gone
        raise CheckFailedError(f"{best['release']} is no longer installed on {device.name}:{root}; current is "
                               "unchanged", "run the pick again")
    previous = current_release(root, device)
    manifest = read_manifest(next(b for a, b in bundles if a.name == best["artifact"]))
    profile = service_profile(manifest["profile"], best["result"], service_threads)
    service = activate_release(device, root, best["release"], previous, profile, camera_env=camera_env)
    result = {**best["result"], "previous_release": previous, "service": service, "service_threads": profile["threads"]}
    result["pick"] = {"strategy": "fastest", "chosen": best["artifact"],
                      "measured": [{k: m.get(k) for k in ("artifact", "p50_ms", "accuracy", "error")}
                                   for m in measured]}
    return result


def pick_fastest(source: Path, profile: DeviceProfile, target: LocalTarget | SshTarget, samples: int,
                 threads: int | str | None = None, max_drop: float | None = 1.0, camera_env: str | None = None) -> dict:
    """Bundle every candidate in `source` within `max_drop`, measure each on the target device and activate
    the fastest; `result["pick"]` says what was measured and what was left out, and why."""
    chosen, left_out = candidates(source, max_drop)
    self_test_threads, service_threads = split_threads(threads)
    with connected(target) as device, tempfile.TemporaryDirectory(prefix="edgetl-pick-") as tmp:
        bundles = [(artifact, Path(tmp) / f"bundle-{number}") for number, artifact in enumerate(chosen)]
        for artifact, bundle in bundles:
            build_bundle(artifact, profile, bundle, samples=samples)
        result = pick_and_deploy(bundles, target.path or profile.install_path, device, threads=self_test_threads,
                                 service_threads=service_threads, camera_env=camera_env)
    result["pick"]["left_out"] = left_out
    return result
