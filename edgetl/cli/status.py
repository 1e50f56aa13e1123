"""`edgetl status`: how a device's (or a fleet's) classifier is doing now, from its heartbeat."""

from __future__ import annotations

import click

from edgetl.cli.common import json_option, table
from edgetl.cli.deploy import ssh_options


def _targets(local_path, host_spec, inventory, ssh):
    from edgetl.deploy.fleet import parse_target, read_inventory
    from edgetl.deploy.target import LocalTarget, ssh_targets
    from edgetl.errors import BadInputError

    if local_path:
        return [LocalTarget(local_path)]
    if not (host_spec or inventory):
        raise BadInputError("say which device: --local ROOT, --host [USER@]HOST --path ROOT, or --hosts INVENTORY")
    entries = read_inventory(inventory) if inventory else [dict(zip(("user", "host"), parse_target(host_spec)))]
    targets = ssh_targets(entries, ssh)
    if any(not target.path for target in targets):
        raise BadInputError("status over SSH needs the install folder", "give --path, or a 'path' in the inventory")
    return targets


def _row(row: dict) -> list:
    beat = row.get("beat") or {}
    latency = beat.get("infer_ms") or {}
    mqtt = beat.get("mqtt")
    sent = (f"{mqtt['published']} sent, {mqtt['dropped']} dropped{'' if mqtt['connected'] else ', offline'}"
            if mqtt else None)
    return [row["device"], row["state"], row.get("current"), beat.get("frames"), beat.get("fps"), latency.get("p50"),
            latency.get("p99"), beat.get("unknown") if beat.get("min_confidence") is not None else None, sent,
            beat.get("uptime_s"), row.get("age_s"), row.get("error") or beat.get("last_error")]


@click.command(short_help="What a device's classifier is doing now: release, frames, FPS, latency, errors.")
@click.option("--local", "local_path", type=click.Path(file_okay=False), help="A release root on this machine.")
@ssh_options
@click.option("--heartbeat", help="The heartbeat file on the device (default: the current release's profile's "
                                  "health.heartbeat, /var/lib/edgetl/heartbeat.json).")
@json_option
def status(local_path, host_spec, inventory, ssh, heartbeat):
    """Read the service's heartbeat on one device or every device of an inventory (in parallel).

    Exits 1 when a device is not `running` (a fresh heartbeat from its current release).
    """
    from edgetl.deploy.status import fleet_status
    from edgetl.errors import CheckFailedError
    from edgetl.cli.common import fail

    rows = fleet_status(_targets(local_path, host_spec, inventory, ssh), heartbeat)
    table("status", ["device", "state", "release", "frames", "FPS", "p50 ms", "p99 ms", "unknown", "mqtt",
                     "uptime s", "age s", "last error"], [_row(row) for row in rows])
    result = {"devices": rows}
    bad = [row["device"] for row in rows if row["state"] != "running"]
    if bad:
        fail(CheckFailedError(f"{len(bad)} of {len(rows)} device(s) not running: {', '.join(bad)}"), result)
    return result
