"""known_hosts, decided the way OpenSSH decides it: inside the handshake, before authenticating.

asyncssh reads the file and matches it (hashed `|1|` entries, several names per line,
wildcards, @revoked, @cert-authority). This module only chooses which name is looked up
(`host` on port 22, `[host]:port` elsewhere: a port-22 entry never vouches for another
sshd on the same machine), records the key the device presented, and turns the
verdict into one line: a CHANGED key is refused whatever the flags, with both
fingerprints; an unknown one shows its fingerprint and is recorded only with
`--accept-new-host-key`, appended without rewriting the file. The system-wide
files (/etc/ssh/ssh_known_hosts, ssh_known_hosts2: where fleets managed by Ansible or
Puppet keep their keys) are read after the user's, as ssh's GlobalKnownHostsFile; new
keys are only ever recorded in the user's file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from pathlib import Path

from edgetl.errors import BadInputError, require

_APPEND_LOCK = threading.Lock()  # fleet threads may record keys in the same known_hosts
SYSTEM_KNOWN_HOSTS = (Path("/etc/ssh/ssh_known_hosts"), Path("/etc/ssh/ssh_known_hosts2"))


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _describe(key) -> str:
    return f"{key.get_fingerprint('sha256')} ({key.get_algorithm()})"


def _check_on_device(key) -> str:
    kind = next((k for k in ("ed25519", "ecdsa", "rsa") if k in key.get_algorithm()), "ed25519")
    return f"on it: ssh-keygen -lf /etc/ssh/ssh_host_{kind}_key.pub"


class HostKeyPolicy:
    """The known_hosts decision for one host, made during the handshake, before authentication.

    asyncssh parses the file and matches entries (hashed `|1|` names, comma-separated names,
    wildcards, @revoked, @cert-authority), so edgetl never compares host strings itself. What
    this class chooses is which names count, as ssh does: `host` on port 22, `[host]:port` on
    any other port, and no fallback from `[host]:port` to `host` (asyncssh's default lookup has
    one; it would let the port-22 entry vouch for another sshd on the same machine). The
    device's IP address counts only when its name has no key. Then:

    - the presented key matches a trusted entry: connect;
    - the host has entries but none matches: CHANGED, refused whatever the flags say;
    - the host has no entry: refused with the presented fingerprint, or, with
      `--accept-new-host-key`, connected and the key appended.
    One connection does it all (asyncssh calls `judge` from the handshake), so a device
    whose key changed never sees our credentials.
    """

    def __init__(self, path: Path, host: str, port: int, accept_new: bool,
                 system_files: tuple[Path, ...] | None = None):
        self.asyncssh = require("asyncssh", "deploy", "deploying over SSH")
        self.path, self.host, self.port, self.accept_new = path, host, port, accept_new
        self.hashed_file = False  # entries are appended in the file's own style
        # (file, its parsed entries): the user's file, then the system-wide ones that exist and can be read.
        self.known = [(path, self._read(path, user=True))]
        self.known += [(file, self._read(file, user=False))
                       for file in (SYSTEM_KNOWN_HOSTS if system_files is None else system_files) if file != path]
        self.entries: list = []  # the host keys known_hosts has for this host
        self.entry_files: list[Path] = []  # the files those entries came from
        self.presented = None  # the key the device presented, when no entry trusted it
        self.verdict: str | None = None  # "changed", "unknown" or "new"

    def _read(self, path: Path, user: bool):
        known = self.asyncssh.SSHKnownHosts()
        if not path.is_file():
            return known
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            if not user:
                return known  # ssh skips a system file it cannot open; it can only ever add trust
            raise BadInputError(f"cannot read known_hosts {path}: {one_line(exc)}",
                                "pass --known-hosts FILE with a readable OpenSSH known_hosts file") from exc
        for line in text.splitlines():
            try:
                known.load(line)
            except ValueError:
                pass  # ssh skips a line it cannot parse too; one bad line must not hide the others
        if user:
            self.hashed_file = any(line.lstrip().startswith("|1|") for line in text.splitlines())
        return known

    def name(self, host: str) -> str:
        return host if self.port == 22 else f"[{host}]:{self.port}"

    def _lookup(self, host: str, files: list[Path] | None = None):
        """Host keys, CA keys and revoked keys for `host`, over every file; `files` collects the files
        that have host keys for it."""
        keys, ca_keys, revoked = [], [], []
        for path, known in self.known:
            found = known.match(self.name(host), "", None)[:3]
            keys += found[0]
            ca_keys += found[1]
            revoked += found[2]
            if found[0] and files is not None:
                files.append(path)
        return keys, ca_keys, revoked

    def algorithms(self) -> list[str]:
        """Host key types to ask for: the known ones first, so a device with several keys presents the
        one we know, then all others, so a device whose key type changed presents its new key and is
        refused as CHANGED with its fingerprint instead of failing key exchange. Certificates only
        when a CA is trusted: otherwise an unknown certificate could not be shown or recorded."""
        keys, ca_keys, _ = self._lookup(self.host)
        first = [alg for key in keys for alg in key.sig_algorithms]
        if ca_keys:
            first += self.asyncssh.public_key.get_default_certificate_algs()
        every = first + self.asyncssh.public_key.get_default_public_key_algs()
        return list(dict.fromkeys(alg.decode() for alg in every))

    def __call__(self, _host: str, addr: str, _port):
        """asyncssh's known_hosts callable, called once TCP is up: the trusted, CA and revoked keys."""
        files: list[Path] = []
        keys, ca_keys, revoked = self._lookup(self.host, files)
        if addr and addr != self.host:
            by_addr_files: list[Path] = []
            by_addr = self._lookup(addr, by_addr_files)
            if not keys:
                keys, files = by_addr[0], by_addr_files
            ca_keys, revoked = [*ca_keys, *by_addr[1]], [*revoked, *by_addr[2]]
        self.entries, self.entry_files = list(keys), list(dict.fromkeys(files))
        return list(keys), list(ca_keys), list(revoked)

    def judge(self, key) -> bool:
        """A key no entry trusts (asyncssh already refused revoked ones): new or changed?"""
        self.presented = key
        if self.entries:
            self.verdict = "changed"
            return False
        self.verdict = "new" if self.accept_new else "unknown"
        return self.accept_new

    def refusal(self, device: str, reason: str) -> BadInputError:
        where = self.name(self.host)
        if self.verdict == "changed":
            files = self.entry_files or [self.path]
            return BadInputError(
                f"host key of {device} CHANGED: {' and '.join(map(str, files))} "
                f"{'has' if len(files) == 1 else 'have'} {', '.join(map(_describe, self.entries))}, "
                f"the device presented {_describe(self.presented)}",
                "a reinstalled device or someone in between: check its key out of band "
                f"({_check_on_device(self.presented)}), and only then remove the old entry with "
                + " and ".join(f"ssh-keygen -R '{where}' -f {file}" for file in files))
        if self.verdict == "unknown":
            return BadInputError(
                f"host key of {device} is not trusted: {self.path} has no entry for {where}; "
                f"the device presented {_describe(self.presented)}",
                f"verify that fingerprint out of band ({_check_on_device(self.presented)}), "
                f"then pass --accept-new-host-key to record it in {self.path}")
        return BadInputError(f"host key of {device} is not trusted ({reason})",
                             f"{self.path} marks it @revoked or it is a certificate no trusted CA signed")

    def record(self, key) -> None:
        """Append the accepted key, hashed if the file hashes its names: never rewrites the file, and
        starts a new line when the last one lacks its newline."""
        name = self.name(self.host)
        if self.hashed_file:  # OpenSSH's HashKnownHosts form: |1|base64(salt)|base64(HMAC-SHA1(salt, name))
            salt = os.urandom(20)
            digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
            name = "|1|" + "|".join(base64.b64encode(part).decode() for part in (salt, digest))
        line = f"{name} {' '.join(key.export_public_key('openssh').decode().split()[:2])}\n"
        with _APPEND_LOCK:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                with open(self.path, "a+b") as handle:  # appends always go to the end, whatever we read
                    end = handle.seek(0, os.SEEK_END)
                    handle.seek(max(end - 1, 0))
                    handle.write((("\n" if end and handle.read(1) != b"\n" else "") + line).encode())
            except OSError as exc:
                raise BadInputError(f"cannot record the host key in {self.path}: {exc.strerror or exc}") from exc


def client_factory(asyncssh, policy: HostKeyPolicy):
    class Client(asyncssh.SSHClient):
        """Routes the host key decision to the policy and remembers why the link went down."""

        lost: str | None = None

        def validate_host_public_key(self, host, addr, port, key) -> bool:
            return policy.judge(key)

        def connection_lost(self, exc) -> None:
            self.lost = one_line(exc) if exc else "connection closed"

    return Client
