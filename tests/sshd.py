"""A real OpenSSH server on 127.0.0.1 as the device stand-in (its own host key, config and user key)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = next((p for p in ("/usr/sbin/sshd", "/usr/bin/sshd") if Path(p).exists()), None)
SFTP_SERVER = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server",
                                "/usr/lib/ssh/sftp-server") if Path(p).exists()), None)


@dataclass
class Sshd:
    port: int
    identity: Path
    known_hosts: Path
    process: subprocess.Popen

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_sshd(folder: Path, sftp: str = "internal-sftp") -> Sshd:
    """`sftp`: the sftp subsystem's command (a test may put a wrapper around OpenSSH's sftp-server)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    port = free_port()
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", "PubkeyAuthentication yes",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin yes", "StrictModes no",
        "UsePAM no", f"PidFile {folder / 'sshd.pid'}", f"Subsystem sftp {sftp}", "LogLevel ERROR",
        "MaxStartups 30", "MaxSessions 30",
    ]) + "\n")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    deadline = time.time() + 10
    while time.time() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    else:
        process.kill()
        raise RuntimeError(f"sshd did not start: {process.stderr.read().decode()[-500:]}")
    host_key = (folder / "host_key.pub").read_text().split()
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    return Sshd(port, folder / "client_key", known_hosts, process)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (sshd's sessions, their sftp-servers and commands), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
