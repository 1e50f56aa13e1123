"""Where a deploy goes: this machine under a folder, or a device over SSH, each one typed record.

An SSH target is built in one place, `SshTarget.from_settings`, whether its settings come from the
command line's flags or from an inventory entry over them, so every deploy, rollback and pick
reaches a device with the same host, user, port, key, known_hosts, trust, folder, Python and timeouts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields
from typing import Iterator


STALL_TIMEOUT = 60.0  # seconds a file transfer may go without progress (a Pi's SD card can pause ~10 s)
HOST_TIMEOUT = 3600.0  # one host's whole deploy: upload, install.sh from wheels and a self-test on a Pi 4


def device_label(user: str | None, host: str, port: int) -> str:
    """How rows and messages name an SSH device: [USER@]HOST:PORT (several may share an address)."""
    return f"{user + '@' if user else ''}{host}:{port}"


@dataclass(frozen=True)
class LocalTarget:
    """This machine as the device (`--local PATH`)."""

    path: str
    name = "local"

    def connect(self):
        from edgetl.deploy.local import LocalDevice

        return LocalDevice()


@dataclass(frozen=True)
class SshTarget:
    """One device over SSH: how to reach it, and where and with which Python to install there."""

    host: str
    user: str | None = None
    port: int = 22
    identity: str | None = None
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    path: str | None = None  # the install folder on the device
    python: str | None = None  # the device's Python for the release's environment
    timeout: float = 15.0  # seconds to reach the device
    stall_timeout: float = STALL_TIMEOUT
    host_timeout: float = HOST_TIMEOUT

    @classmethod
    def from_settings(cls, settings: dict) -> "SshTarget":
        """From typed settings (flags, an inventory entry read by `read_inventory`); unset ones keep the defaults
        and keys that are not a target's are ignored."""
        names = {field.name for field in fields(cls)}
        given = {key: value for key, value in settings.items() if key in names and value is not None}
        for key in ("host", "user", "identity", "known_hosts", "path", "python"):
            if key in given:
                given[key] = str(given[key])  # YAML may read a host or user as a number
        return cls(**given)

    @property
    def name(self) -> str:
        return device_label(self.user, self.host, self.port)

    def connect(self):
        from edgetl.deploy.ssh import SshDevice

        return SshDevice(self.host, self.port, self.user, self.identity, self.known_hosts, self.accept_new_host_key,
                         self.timeout, self.python, stall_timeout=self.stall_timeout, host_timeout=self.host_timeout)


def ssh_targets(entries: list[dict], defaults: dict) -> list[SshTarget]:
    """One target per entry (an inventory's hosts, or the one --host), its own settings over `defaults`."""
    return [SshTarget.from_settings({**defaults, **{k: v for k, v in entry.items() if v is not None}})
            for entry in entries]


@contextlib.contextmanager
def connected(target: LocalTarget | SshTarget) -> Iterator:
    """The target's device, closed afterwards whatever happens."""
    device = target.connect()
    try:
        yield device
    finally:
        device.close()
