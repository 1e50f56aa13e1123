"""A deploy root's `state.json`: which release serves, which served before, and which proved good or bad.

    {"current": ID, "previous": ID, "history": [ID, ...],
     "good": [ID, ...],   releases that served: self-tested, switched to and restarted
     "bad": [ID, ...]}    releases whose restart failed after a switch: never switched to again

The `current` symlink stays the truth about what serves; this file is what a rollback needs
besides it: a rollback goes to the newest good release that is not current and never to a bad one.
A release that failed is kept on disk (its folder is complete and self-tested) so that its logs
and files can be looked at, but `--rollback` will not pick it. A root from before good/bad were
recorded counts its history as good: those releases served; with no record at all (a torn file),
the release that was current before the current one is the target.
"""

from __future__ import annotations

import json

from edgetl.console import warn

KEEP_RECORDS = 20  # history, good and bad keep this many ids each (the newest)


def _ids(value) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def read_state(device, root: str) -> dict:
    """state.json, or an empty history when it is missing or torn (the symlink is the truth)."""
    text = device.read_text(f"{root}/state.json")
    try:
        state = json.loads(text) if text else {}
    except json.JSONDecodeError:
        warn(f"{device.name}:{root}/state.json is unreadable; continuing from the `current` link")
        state = {}
    if not isinstance(state, dict):
        state = {}
    state["history"] = _ids(state.get("history"))
    state["bad"] = _ids(state.get("bad"))
    recorded = "good" in state
    state["good"] = _ids(state.get("good")) if recorded else [h for h in state["history"] if h not in state["bad"]]
    return state


def write_state(device, root: str, state: dict) -> None:
    device.write_text(f"{root}/state.json", json.dumps(state, indent=2) + "\n")


def mark(state: dict, release: str, good: bool) -> dict:
    """Record `release` as proven good (it serves) or bad (it failed after a switch); the other list drops it."""
    keep, drop = ("good", "bad") if good else ("bad", "good")
    state[drop] = [r for r in state.get(drop, []) if r != release]
    state[keep] = [*[r for r in state.get(keep, []) if r != release], release][-KEEP_RECORDS:]
    return state


def last_good(state: dict, installed: list[str], current: str | None) -> str | None:
    """The rollback target: the newest release proven good that is still installed, is not current and
    was never marked bad. `installed` is the root's finished releases, oldest first."""
    def eligible(release) -> bool:
        return release in installed and release != current and release not in state.get("bad", [])

    good = [r for r in state.get("good", []) if eligible(r)]
    if good:
        return good[-1]  # the newest to have served: `good` is appended to when a release proves itself
    # No record (a torn state.json was replaced): the release that served before the current one did.
    previous = state.get("previous")
    return previous if isinstance(previous, str) and eligible(previous) else None


def release_profile(device, root: str, release: str | None) -> dict:
    """The profile a release was installed with (its manifest's): its health window and heartbeat path.
    Empty when the release or its manifest is missing or torn."""
    text = device.read_text(f"{root}/releases/{release}/manifest.json") if release else None
    try:
        profile = json.loads(text).get("profile") if text else None
    except (json.JSONDecodeError, AttributeError):
        profile = None
    return profile if isinstance(profile, dict) else {}
