"""What `edgetl deploy` does, one function per mode, each over an artifact already chosen:

- `ship_local`: bundle it and install it on this machine;
- `ship_fleet`: bundle it once and install it on every SSH device, one row per device;
- `bundle_only`: write the offline bundle (.tar.gz) and nothing else;
- `roll_back`: switch a device back to its previous release (no artifact needed).

`--pick fastest` measures several artifacts on one device: `pick.pick_fastest`. The command line
parses, calls one of these and renders what it returns.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Iterator

from edgetl.deploy.bundle import build_bundle, pack
from edgetl.deploy.profiles import DeviceProfile
from edgetl.deploy.target import LocalTarget, SshTarget, connected


def split_threads(threads: int | str | None) -> tuple[int | None, int | str | None]:
    """--threads as (the self-test's, the service's): N -> (N, N); 'best' -> (None, 'best'): the self-test
    sweeps and the service gets the fastest; absent -> (None, None): the profile's."""
    if threads is None or threads == "best":
        return None, threads
    return int(threads), int(threads)


@contextlib.contextmanager
def _bundled(artifact: Path, profile: DeviceProfile, samples: int) -> Iterator[tuple[Path, dict]]:
    """A bundle folder of `artifact` for `profile` (and its manifest), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="edgetl-bundle-") as tmp:
        bundle = Path(tmp) / "bundle"
        yield bundle, build_bundle(artifact, profile, bundle, samples=samples)


def bundle_only(artifact: Path, profile: DeviceProfile, out: str, samples: int) -> dict:
    with _bundled(artifact, profile, samples) as (bundle, manifest):
        pack(bundle, Path(out))
    return {"bundle": manifest["bundle"], "path": out, "device": profile.name, "artifact": manifest["artifact"],
            "wheels": manifest["wheels"], "files": len(manifest["files"])}


def mender_artifact(artifact: Path, profile: DeviceProfile, out: str, samples: int, device_types: list[str],
                    sign_key: str | None = None) -> dict:
    """The bundle as a Mender artifact (mender.write_artifact) for `device_types` (default: the profile's name)."""
    from edgetl.deploy.mender import write_artifact

    with _bundled(artifact, profile, samples) as (bundle, _):
        return write_artifact(bundle, out, device_types or [profile.name], sign_key)


def ship_local(artifact: Path, profile: DeviceProfile, target: LocalTarget, samples: int,
               threads: int | str | None = None, camera_env: str | None = None) -> dict:
    from edgetl.deploy.local import install_release

    self_test_threads, service_threads = split_threads(threads)
    with _bundled(artifact, profile, samples) as (bundle, _):
        return install_release(bundle, Path(target.path), threads=self_test_threads, service_threads=service_threads,
                               camera_env=camera_env)


def ship_fleet(artifact: Path, profile: DeviceProfile, targets: list[SshTarget], samples: int,
               threads: int | str | None = None, camera_env: str | None = None) -> list[dict]:
    """Every target's row (`fleet.deploy_fleet`): one device failing never stops the others."""
    from edgetl.deploy.fleet import deploy_fleet

    self_test_threads, service_threads = split_threads(threads)
    with _bundled(artifact, profile, samples) as (bundle, _):
        return deploy_fleet(bundle, targets, threads=self_test_threads, service_threads=service_threads,
                            camera_env=camera_env)


def roll_back(target: LocalTarget | SshTarget) -> dict:
    from edgetl.deploy.rollback import rollback

    with connected(target) as device:
        return rollback(target.path, device)
