"""A device reached over SSH (asyncssh), behind the same interface as LocalDevice.

- Host keys are checked against known_hosts (default ~/.ssh/known_hosts). An unknown
  key stops the deploy with its fingerprint; accepting it is an explicit flag
  (`--accept-new-host-key`), which records it. A changed key is never accepted.
- Every remote command is an argument list joined with `shlex.join`: nothing the
  user or a file name contains is interpreted by the remote shell.
- The private key is passed to asyncssh by path and never logged.
- Uploads resume: files already on the device with the right sha256 are kept.
- An unreachable host fails within `timeout` seconds with one line.
"""

from __future__ import annotations

import asyncio
import shlex
import subprocess
from pathlib import Path

from edgetl.errors import BadInputError, require
from edgetl.runtime.sidecar import sha256_file


class SshDevice:
    def __init__(self, host: str, port: int = 22, username: str | None = None, identity: str | None = None,
                 known_hosts: str | None = None, accept_new_host_key: bool = False, timeout: float = 15.0,
                 python: str | None = None):
        self.asyncssh = require("asyncssh", "deploy", "deploying over SSH")
        self.name = f"{username + '@' if username else ''}{host}:{port}"
        self.python = python
        self.loop = asyncio.new_event_loop()
        self.known_hosts = Path(known_hosts or Path.home() / ".ssh" / "known_hosts").expanduser()
        options = dict(port=port, username=username, connect_timeout=timeout,
                       client_keys=[str(Path(identity).expanduser())] if identity else None)
        try:
            self.conn = self._wait(self.asyncssh.connect(host, known_hosts=self._trusted(), **options), timeout)
        except self.asyncssh.HostKeyNotVerifiable as exc:
            if not accept_new_host_key or self._known_host(host, port):
                raise BadInputError(
                    f"host key of {self.name} is not trusted ({exc.reason})",
                    f"verify it out of band, then pass --accept-new-host-key to record it in {self.known_hosts}"
                    if not self._known_host(host, port) else "the key CHANGED: investigate before deploying",
                ) from exc
            self.conn = self._wait(self.asyncssh.connect(host, known_hosts=None, **options), timeout)
            self._record_host_key(host, port)
        except self.asyncssh.PermissionDenied as exc:
            raise BadInputError(f"authentication to {self.name} failed", "pass --identity KEY for a key the "
                                "device accepts") from exc
        except (OSError, asyncio.TimeoutError, self.asyncssh.Error) as exc:
            self.loop.close()
            raise BadInputError(f"cannot reach {self.name} within {timeout:.0f} s ({type(exc).__name__}: {exc})",
                                "check the address, port and that sshd runs on the device") from exc
        self.sftp = self._wait(self.conn.start_sftp_client(), timeout)

    # -- plumbing ------------------------------------------------------------------------
    def _wait(self, coroutine, timeout: float | None = None):
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, timeout) if timeout else coroutine)

    def _trusted(self):
        return str(self.known_hosts) if self.known_hosts.is_file() else ()

    def _host_pattern(self, host: str, port: int) -> str:
        return host if port == 22 else f"[{host}]:{port}"

    def _known_host(self, host: str, port: int) -> bool:
        if not self.known_hosts.is_file():
            return False
        pattern = self._host_pattern(host, port)
        return any(line.split(" ", 1)[0].split(",").count(pattern) for line in self.known_hosts.read_text().splitlines())

    def _record_host_key(self, host: str, port: int) -> None:
        key = self.conn.get_server_host_key().export_public_key("openssh").decode().strip()
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with open(self.known_hosts, "a") as handle:
            handle.write(f"{self._host_pattern(host, port)} {key}\n")

    # -- the Device interface ------------------------------------------------------------------
    def run(self, argv: list[str], check: bool = False) -> subprocess.CompletedProcess:
        result = self._wait(self.conn.run(shlex.join(argv), check=False))
        completed = subprocess.CompletedProcess(argv, result.exit_status if result.exit_status is not None else 255,
                                                result.stdout or "", result.stderr or "")
        if check and completed.returncode != 0:
            from edgetl.errors import CheckFailedError

            last = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise CheckFailedError(f"{argv[0]} failed on {self.name}: {last}")
        return completed

    def upload(self, bundle: Path, target: str) -> None:
        present = {}
        listing = self.run(["sh", "-c", f"cd {shlex.quote(target)} && find . -type f -exec sha256sum {{}} +"])
        for line in listing.stdout.splitlines():
            digest, _, name = line.partition("  ")
            present[name.removeprefix("./")] = digest
        files = sorted(p for p in bundle.rglob("*") if p.is_file())
        folders = sorted({str(Path(target) / p.parent.relative_to(bundle)) for p in files})
        self.run(["mkdir", "-p", *folders], check=True)
        for path in files:
            name = path.relative_to(bundle).as_posix()
            if present.get(name) != sha256_file(path):
                self._wait(self.sftp.put(str(path), f"{target}/{name}"))

    def read_text(self, path: str) -> str | None:
        result = self.run(["cat", path])
        return result.stdout if result.returncode == 0 else None

    def write_text(self, path: str, text: str) -> None:
        tmp = f"{path}.tmp"
        async def write() -> None:
            async with self.sftp.open(tmp, "w") as handle:
                await handle.write(text)
        self._wait(write())
        self.run(["mv", "-f", tmp, path], check=True)

    def close(self) -> None:
        try:
            self.sftp.exit()
            self.conn.close()
            self._wait(self.conn.wait_closed())
        finally:
            self.loop.close()
