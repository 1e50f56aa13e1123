"""Deploying one bundle to many devices in parallel (`--hosts inventory.yaml`).

    hosts:
      - {host: 10.0.0.12, user: pi, port: 22, identity: ~/.ssh/id_ed25519, path: /opt/edgetl}
      - host: cam-2.local

Each host gets its own connection and the same verified steps; one host failing
does not stop the others, and the result is one row per host.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from edgetl.errors import BadInputError, EdgetlError


def parse_target(spec: str) -> tuple[str | None, str]:
    """'[user@]host' -> (user, host)."""
    user, _, host = spec.rpartition("@")
    if not host:
        raise BadInputError(f"--host {spec!r} is empty")
    return (user or None), host


def read_inventory(path: str | Path) -> list[dict]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BadInputError(f"cannot read inventory {path}: {exc}") from exc
    hosts = data.get("hosts") if isinstance(data, dict) else None
    if not isinstance(hosts, list) or not hosts:
        raise BadInputError(f"inventory {path}: expected 'hosts:' with a list of devices")
    for i, entry in enumerate(hosts):
        if not isinstance(entry, dict) or not entry.get("host"):
            raise BadInputError(f"inventory {path}: hosts[{i}] needs a 'host'")
    return hosts


def deploy_one(bundle: Path, entry: dict, defaults: dict, threads: int | None) -> dict:
    from edgetl.deploy.local import install_release
    from edgetl.deploy.ssh import SshDevice

    settings = {**defaults, **{k: v for k, v in entry.items() if v is not None}}
    device = SshDevice(settings["host"], int(settings.get("port", 22)), settings.get("user"),
                       settings.get("identity"), settings.get("known_hosts"),
                       bool(settings.get("accept_new_host_key")), float(settings.get("timeout", 15)),
                       settings.get("python"))
    try:
        return install_release(bundle, settings["path"], device=device, threads=threads)
    finally:
        device.close()


def deploy_fleet(bundle: Path, hosts: list[dict], defaults: dict, threads: int | None = None,
                 parallel: int = 8) -> list[dict]:
    def attempt(entry: dict) -> dict:
        try:
            return {"ok": True, **deploy_one(bundle, entry, defaults, threads)}
        except EdgetlError as exc:
            return {"ok": False, "host": entry["host"], "port": entry.get("port", 22), "error": exc.message}

    with ThreadPoolExecutor(max_workers=min(parallel, len(hosts))) as pool:
        return list(pool.map(attempt, hosts))
