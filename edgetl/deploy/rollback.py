"""`edgetl deploy --rollback`: back to the last release known to be good, or a clear failure.

The target is the newest release `state.json` records as good (it served: self-tested, switched
to, restarted) that is still installed and is not current; a release recorded bad (its restart
failed after a switch) is never a target. Before the switch the target proves intact (checksums,
a short self-test). A restart that fails after the switch, or a service that does not prove the
target healthy within its health window (health.py), is a failed rollback: `current` goes
back to the release that was serving, that one is restarted, the target is recorded bad, and
the command exits non-zero. The device always ends on a release that runs.
"""

from __future__ import annotations

from pathlib import Path

from edgetl.deploy.health import restart_and_prove, restart_service
from edgetl.deploy.local import (LocalDevice, activate_release, claim_root, current_release, releases, resolve_root,
                                 self_test_release, switch, verify_checksums)
from edgetl.deploy.lock import device_lock
from edgetl.deploy.service import SERVICE_NAME
from edgetl.deploy.state import last_good, mark, read_state, release_profile, write_state
from edgetl.errors import BadInputError, CheckFailedError


def _target(device, root: str, current: str, state: dict) -> str:
    installed = releases(device, root)
    target = last_good(state, installed, current)
    if target is not None:
        return target
    others = [r for r in installed if r != current]
    bad = [r for r in others if r in state["bad"]]
    why = f" ({', '.join(bad)} failed after a switch and is never rolled back to)" if bad else ""
    raise BadInputError(f"{device.name}:{root} keeps no earlier release known to be good{why}",
                        "deploy a new bundle instead")


def _verified(device, root: str, target: str, current: str, threads: int | None) -> None:
    folder = f"{root}/releases/{target}"
    try:
        verify_checksums(device, folder)
        self_test_release(device, folder, threads, runs=5)
    except CheckFailedError as exc:
        raise CheckFailedError(f"refusing to roll back to {target}: {exc.message}; current stays {current}",
                               "deploy a new bundle instead") from None


def activate_installed(root: Path | str, release: str, device=None) -> dict:
    """Switch to a release installed (and self-tested) without activation: switch, restart, health window;
    one that fails is switched back and recorded bad (local.activate_release). What Mender's commit runs."""
    device = device or LocalDevice()
    root = resolve_root(root, device)
    claim_root(device, root, create=False)
    with device_lock(device, root):
        if release not in releases(device, root):
            raise BadInputError(f"{device.name}:{root} has no installed release {release}",
                                "install it first (sh install.sh --root ROOT --stage)")
        previous = current_release(root, device)
        service = "unchanged (already current)"
        if previous != release:
            service = activate_release(device, root, release, previous, release_profile(device, root, release))
    return {"host": device.name, "path": root, "release": release, "previous_release": previous, "service": service}


def rollback(root: Path | str, device=None, threads: int | None = None) -> dict:
    """Switch `current` to the last known-good release once it proves intact; restart the service."""
    device = device or LocalDevice()
    root = resolve_root(root, device)
    claim_root(device, root, create=False)
    with device_lock(device, root):
        current = current_release(root, device)
        if current is None:
            raise BadInputError(f"{device.name}:{root} has no current release to roll back from")
        state = read_state(device, root)
        target = _target(device, root, current, state)
        _verified(device, root, target, current, threads)
        switch(device, root, target)
        state.update(current=target, previous=current)
        write_state(device, root, state)
        service = restart_and_prove(device, target, release_profile(device, root, target))
        if service.failure:
            switch(device, root, current)
            state.update(current=current, previous=None)
            write_state(device, root, mark(state, target, good=False))
            restart_service(device)
            raise CheckFailedError(f"rollback to {target} failed on {device.name}: {SERVICE_NAME} did not serve it "
                                   f"({service.text}); switched back to {current}",
                                   f"see `journalctl -u {SERVICE_NAME}` on the device; {target} is now recorded "
                                   "as bad and will not be rolled back to")
        write_state(device, root, mark(state, target, good=True))
    return {"host": device.name, "path": root, "release": target, "previous_release": current, "service": service.text}
