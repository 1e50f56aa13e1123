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

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from edgetl.errors import BadInputError, EdgetlError

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def parse_target(spec: str) -> tuple[str | None, str]:
    """'[user@]host' -> (user, host)."""
    user, _, host = spec.rpartition("@")
    if not host:
        raise BadInputError(f"--host {spec!r} is empty")
    return (user or None), host


def parse_bool(value, field: str) -> bool:
    """A YAML boolean, also when quoted: true/false, yes/no, on/off, 1/0 in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise BadInputError(f"{field} must be true or false, not {value!r}", "write true or false (yes/no also work)")


def parse_port(value, field: str) -> int:
    if (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.strip().isdigit()):
        if 1 <= int(value) <= 65535:
            return int(value)
    raise BadInputError(f"{field} must be a port number from 1 to 65535, not {value!r}")


def parse_timeout(value, field: str) -> float:
    if not isinstance(value, bool):
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = math.nan
        if seconds > 0 and math.isfinite(seconds):
            return seconds
    raise BadInputError(f"{field} must be a positive number of seconds, not {value!r}")


def _checked(settings: dict, where: str) -> dict:
    """`settings` with typed values; a bad one names its field (`where` + '.name')."""
    out = dict(settings)
    parsers = {"accept_new_host_key": parse_bool, "port": parse_port, "timeout": parse_timeout}
    for name, parse in parsers.items():
        if out.get(name) is not None:
            out[name] = parse(out[name], f"{where}.{name}")
    return out


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
    return [_checked(entry, f"inventory {path}: hosts[{i}]") for i, entry in enumerate(hosts)]


def _label(settings: dict) -> str:
    """The row's name for a host, as SshDevice.name spells it (several devices may share an address)."""
    user = settings.get("user")
    return f"{str(user) + '@' if user else ''}{settings.get('host')}:{settings.get('port') or 22}"


def deploy_one(bundle: Path, entry: dict, defaults: dict, threads: int | None,
               service_threads: int | str | None = None) -> dict:
    from edgetl.deploy.local import install_release
    from edgetl.deploy.ssh import SshDevice

    merged = {**defaults, **{k: v for k, v in entry.items() if v is not None}}
    settings = _checked(merged, str(merged.get("host")))
    device = SshDevice(str(settings["host"]), settings.get("port") or 22, settings.get("user"),
                       settings.get("identity"), settings.get("known_hosts"),
                       settings.get("accept_new_host_key") or False, settings.get("timeout") or 15.0,
                       settings.get("python"))
    try:
        return install_release(bundle, settings["path"], device=device, threads=threads,
                               service_threads=service_threads)
    finally:
        device.close()


def deploy_fleet(bundle: Path, hosts: list[dict], defaults: dict, threads: int | None = None,
                 parallel: int = 8, service_threads: int | str | None = None) -> list[dict]:
    def attempt(entry: dict) -> dict:
        settings = {**defaults, **{k: v for k, v in entry.items() if v is not None}}
        failed = {"ok": False, "host": _label(settings), "port": settings.get("port") or 22}
        try:
            return {"ok": True, **deploy_one(bundle, entry, defaults, threads, service_threads)}
        except EdgetlError as exc:
            return {**failed, "error": " ".join(exc.message.split()), "hint": exc.hint, "exit_code": exc.exit_code}
        except Exception as exc:  # noqa: BLE001 - one host's bug or I/O error must not stop the fleet
            return {**failed, "error": " ".join(f"{type(exc).__name__}: {exc}".split()), "hint": None,
                    "exit_code": 1}

    with ThreadPoolExecutor(max_workers=min(parallel, len(hosts))) as pool:
        return list(pool.map(attempt, hosts))
