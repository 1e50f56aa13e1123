#!/usr/bin/env python
"""A loopback fleet with a stalled and a dropping host: do the other devices finish, and how fast?

Twenty devices (by default) on this machine, each an install folder behind a real OpenSSH server on
127.0.0.1 (tests/sshd.py): most share one sshd; one host's sftp-server is frozen with SIGSTOP 0.3 s
after it starts (a hung SD card: sshd still answers keepalives), and one host's sshd is killed a few
seconds into its deploy (a device dropping off the network). Every device gets the same real bundle:
upload, sha256 check, a venv from the bundled wheels, the on-device self-test, the switch.

    python scripts/fleet_hostile.py ARTIFACT_DIR [--hosts 20] [--parallel 8] [--stall-timeout 10]

It prints one row per host and the wall time; the stalled and the dropped host must fail with their
own one-line reasons and every other host must deploy. Too slow for the test suite (the 3-host version
is tests/test_ssh.py::test_a_stalled_sftp_server_fails_its_host_and_the_fleet_finishes).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sshd import SFTP_SERVER, descendants, signal_all, start_sshd  # noqa: E402 - the suite's loopback device stand-in


def _kill_tree(server) -> None:
    signal_all([server.process.pid, *descendants(server.process.pid)], signal.SIGKILL)


def _servers(folder: Path):
    stall_wrapper = folder / "stalling-sftp-server"
    stall_wrapper.write_text(f"#!/bin/sh\n(sleep 0.3; kill -STOP $$) &\nexec {SFTP_SERVER}\n")
    stall_wrapper.chmod(0o755)
    return (start_sshd(folder / "good"), start_sshd(folder / "stalled", sftp=str(stall_wrapper)),
            start_sshd(folder / "dropping"))


def _targets(servers, folder: Path, hosts: int, args) -> tuple[list, int, int]:
    from edgetl.deploy.target import SshTarget

    good, stalled, dropping = servers
    stalled_at, dropping_at = 3 % hosts, 7 % hosts
    targets = []
    for i in range(hosts):
        server = stalled if i == stalled_at else dropping if i == dropping_at else good
        targets.append(SshTarget(host="127.0.0.1", user="root", port=server.port, identity=str(server.identity),
                                 known_hosts=str(server.known_hosts), path=str(folder / f"device-{i:02d}"),
                                 python=sys.executable, timeout=10, stall_timeout=args.stall_timeout,
                                 host_timeout=args.host_timeout))
    return targets, stalled_at, dropping_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", type=Path, help="an exported artifact folder (e.g. RUN/export/onnx-fp32)")
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--stall-timeout", type=float, default=10.0)
    parser.add_argument("--host-timeout", type=float, default=1800.0)
    parser.add_argument("--drop-after", type=float, default=4.0, help="seconds before the dropping host's sshd dies")
    args = parser.parse_args()

    from edgetl.deploy.bundle import build_bundle
    from edgetl.deploy.fleet import deploy_fleet
    from edgetl.deploy.profiles import get_profile

    with tempfile.TemporaryDirectory(prefix="edgetl-fleet-") as tmp:
        folder = Path(tmp)
        bundle = folder / "bundle"
        build_bundle(args.artifact, get_profile("linux-x86"), bundle, samples=10)
        servers = _servers(folder)
        try:
            targets, stalled_at, dropping_at = _targets(servers, folder, args.hosts, args)
            threading.Timer(args.drop_after, _kill_tree, (servers[2],)).start()
            started = time.monotonic()
            rows = deploy_fleet(bundle, targets, parallel=args.parallel)
            wall = time.monotonic() - started
        finally:
            for server in servers:
                _kill_tree(server)
    for i, row in enumerate(rows):
        role = "stalled" if i == stalled_at else "dropping" if i == dropping_at else "device"
        print(f"{i:2d} {role:8s} {'ok' if row['ok'] else 'FAILED'} {row.get('release') or row.get('error')}")
    others = [r for i, r in enumerate(rows) if i not in (stalled_at, dropping_at)]
    print(json.dumps({"hosts": args.hosts, "parallel": args.parallel, "wall_s": round(wall, 1),
                      "others_ok": sum(r["ok"] for r in others), "others": len(others),
                      "stalled": rows[stalled_at].get("error"), "dropping": rows[dropping_at].get("error")}, indent=1))


if __name__ == "__main__":
    main()
