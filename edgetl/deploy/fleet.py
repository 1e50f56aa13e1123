"""Deploying one bundle to many devices in parallel (`--hosts inventory.yaml`).

    hosts:
      - {host: 10.0.0.12, user: pi, port: 22, identity: ~/.ssh/id_ed25519, path: /opt/edgetl}
      - host: cam-2.local

Each host gets its own connection and the same verified steps; one host failing,
whatever the failure (unreachable, a refused host key, a lost connection, a full
disk, a bug), does not stop the others, and the result is one row per host.

Inventory values are parsed strictly: YAML keeps a quoted "false" a string, and
`bool("false")` is True, which would turn "do not accept new host keys" into yes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from edgetl.contract.fields import Fields
from edgetl.deploy.target import SshTarget, connected
from edgetl.errors import BadInputError, EdgetlError

INVENTORY_HINT = "list the devices under 'hosts:', e.g. - {host: 10.0.0.12, user: pi, port: 22}"


def parse_target(spec: str) -> tuple[str | None, str]:
    """'[user@]host' -> (user, host)."""
    user, _, host = spec.rpartition("@")
    if not host:
        raise BadInputError(f"--host {spec!r} is empty")
    return (user or None), host


def _checked(settings: dict, fields: Fields) -> dict:
    """`settings` with typed values, read through `fields` (contract/fields.py) so a bad one is named."""
    out = dict(settings)
    if out.get("accept_new_host_key") is not None:
        out["accept_new_host_key"] = fields.boolean(out["accept_new_host_key"], "accept_new_host_key")
    if out.get("port") is not None:
        out["port"] = fields.number(out["port"], "port", 1, 65535, integer=True, text=True,
                                    hint="the device's SSH port: 22 unless its sshd listens elsewhere")
    for key, example in (("timeout", "the SSH connection timeout in seconds, e.g. 15"),
                         ("stall_timeout", "seconds a file transfer may make no progress, e.g. 60"),
                         ("host_timeout", "seconds for one device's whole deploy, e.g. 3600")):
        if out.get(key) is not None:
            out[key] = float(fields.number(out[key], key, 0, low_open=True, text=True, hint=example))
    return out


def read_inventory(path: str | Path) -> list[dict]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BadInputError(f"cannot read inventory {path}: {exc}") from exc
    fields = Fields(f"inventory {path}", INVENTORY_HINT)
    hosts = data.get("hosts") if isinstance(data, dict) else None
    if not isinstance(hosts, list) or not hosts:
        fields.fail("hosts", "must list the devices to deploy to")
    for i, entry in enumerate(hosts):
        if not isinstance(entry, dict) or not entry.get("host"):
            fields.fail(f"hosts[{i}].host", "is required: the device's address or name")
    return [_checked(entry, fields.nested(f"hosts[{i}]")) for i, entry in enumerate(hosts)]


def deploy_one(bundle: Path, target: SshTarget, threads: int | None,
               service_threads: int | str | None = None, camera_env: str | None = None) -> dict:
    from edgetl.deploy.local import install_release  # at call time: a test replaces it to inject a fault

    if not target.path:
        raise BadInputError(f"no install folder for {target.name}", "give --path, or a 'path' in the inventory")
    with connected(target) as device:
        return install_release(bundle, target.path, device=device, threads=threads, service_threads=service_threads,
                               camera_env=camera_env)


def deploy_fleet(bundle: Path, targets: list[SshTarget], threads: int | None = None,
                 parallel: int = 8, service_threads: int | str | None = None, camera_env: str | None = None) -> list[dict]:
    """One row per target, in order: {"ok": True, **the install result}, or {"ok": False, "error", ...}."""
    return per_host(targets, lambda target: {"ok": True, **deploy_one(bundle, target, threads, service_threads,
                                                                        camera_env)},
                    lambda target: {"ok": False, "host": target.name, "port": target.port}, parallel)


def per_host(targets: list, work, failed, parallel: int = 8) -> list[dict]:
    """`work(target)` for every target in parallel, in order. An exception is that target's row,
    `failed(target)` with the error, hint and exit code, never the fleet's: deploy and status share this."""
    def attempt(target) -> dict:
        try:
            return work(target)
        except EdgetlError as exc:
            return {**failed(target), "error": " ".join(exc.message.split()), "hint": exc.hint,
                    "exit_code": exc.exit_code}
        except Exception as exc:  # noqa: BLE001 - one host's bug or I/O error must not stop the fleet
            return {**failed(target), "error": " ".join(f"{type(exc).__name__}: {exc}".split()), "hint": None,
                    "exit_code": 1}

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(targets)))) as pool:
        return list(pool.map(attempt, targets))
