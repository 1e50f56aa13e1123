"""A device reached over SSH (asyncssh), behind the same interface as LocalDevice.

- Host keys are checked against known_hosts (default ~/.ssh/known_hosts) the way
  OpenSSH does it, inside the handshake and before authenticating (HostKeyPolicy).
  An unknown key stops the deploy with its fingerprint; accepting it is an explicit
  flag (`--accept-new-host-key`), which records it. A changed key is never accepted.
- Every remote command is an argument list joined with `shlex.join`: nothing the
  user or a file name contains is interpreted by the remote shell.
- The private key is passed to asyncssh by path and never logged; a
  passphrase-protected one works through ssh-agent.
- Uploads resume: files already on the device with the right sha256 are kept.
- Nothing hangs: an unreachable host fails within `timeout` s, keepalives notice a device
  gone off the network in ~15 s, every command has a timeout, a file transfer that makes no
  progress for `stall_timeout` s fails (a hung SD card or sftp-server answers keepalives: sshd
  is alive, the transfer is not), and every step ends by the host's overall deadline
  (`host_timeout` s from connecting). Each failure is one line.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import subprocess
import time
from contextlib import suppress
from pathlib import Path
from types import SimpleNamespace

from edgetl.contract.sidecar import sha256_file
from edgetl.deploy.host_keys import HostKeyPolicy, client_factory, one_line as _one_line
from edgetl.deploy.target import HOST_TIMEOUT, STALL_TIMEOUT, device_label
from edgetl.errors import BadInputError, CheckFailedError, require

KEEPALIVE_INTERVAL = 5.0  # seconds of silence before asking the device whether it is still there
KEEPALIVE_COUNT_MAX = 3  # unanswered asks before the link counts as lost: ~15 s for a vanished device
COMMAND_TIMEOUT = 300.0  # run()'s default; long steps (install.sh, a self-test) pass their own
SHORT_TIMEOUT = 120.0  # listings, mkdir, mv, cat: a live device answers these in seconds


class SshDevice:
    def __init__(self, host: str, port: int = 22, username: str | None = None, identity: str | None = None,
                 known_hosts: str | None = None, accept_new_host_key: bool = False, timeout: float = 15.0,
                 python: str | None = None, stall_timeout: float = STALL_TIMEOUT, host_timeout: float = HOST_TIMEOUT):
        self.asyncssh = require("asyncssh", "deploy", "deploying over SSH")
        self.name = device_label(username, host, port)
        self.python = python
        self.stall_timeout, self.host_timeout = stall_timeout, host_timeout
        self.deadline = time.monotonic() + host_timeout
        self.known_hosts = Path(known_hosts or Path.home() / ".ssh" / "known_hosts").expanduser()
        self.policy = HostKeyPolicy(self.known_hosts, host, port, accept_new_host_key)
        self.encrypted_key, self.sftp, self.stalled = None, None, False
        options = dict(port=port, username=username, connect_timeout=timeout, known_hosts=self.policy,
                       server_host_key_algs=self.policy.algorithms(), keepalive_interval=KEEPALIVE_INTERVAL,
                       keepalive_count_max=KEEPALIVE_COUNT_MAX, **self._client_keys(identity))
        self.loop = asyncio.new_event_loop()
        try:
            self.conn, self.client = self.wait_for(self.asyncssh.create_connection(
                client_factory(self.asyncssh, self.policy), host, **options), timeout + 5)
        except BaseException as exc:
            self.loop.close()
            error = self._connect_error(exc, timeout)
            raise error from (None if error is exc else exc)
        try:
            if self.policy.verdict == "new":
                self.policy.record(self.policy.presented)
            self.sftp = self.wait_for(self.conn.start_sftp_client(), timeout)
        except Exception as exc:
            self.close()
            if isinstance(exc, BadInputError):
                raise
            raise CheckFailedError(f"cannot start SFTP on {self.name}: {_one_line(exc)}",
                                   "the device's sshd needs an sftp subsystem (Subsystem sftp internal-sftp)") from exc

    # -- connecting ------------------------------------------------------------------------
    def _client_keys(self, identity: str | None) -> dict:
        """Without --identity: ssh's defaults (agent, ~/.ssh/id_*). An encrypted key is refused before
        connecting unless an agent may hold it: nobody can answer a passphrase prompt in a fleet deploy."""
        if not identity:
            return {}
        path = Path(identity).expanduser()
        try:
            self.asyncssh.read_private_key(str(path))
        except OSError as exc:
            raise BadInputError(f"cannot read the key {path}: {exc.strerror or _one_line(exc)}",
                                "pass --identity with the path of the private key") from exc
        except self.asyncssh.KeyImportError as exc:
            if "assphrase" not in str(exc):
                raise BadInputError(f"the key {path} cannot be used: {_one_line(exc)}",
                                    "pass the private key (not the .pub) in OpenSSH or PEM format") from exc
            self.encrypted_key = path
            if not os.environ.get("SSH_AUTH_SOCK"):
                raise self._passphrase_error() from exc
            public = Path(f"{path}.pub")
            return {"client_keys": [str(path)], "ignore_encrypted": True,
                    **({"agent_identities": [str(public)]} if public.is_file() else {})}
        return {"client_keys": [str(path)]}

    def _passphrase_error(self) -> BadInputError:
        return BadInputError(f"the key {self.encrypted_key} is passphrase-protected",
                             f"load it into ssh-agent (ssh-add {self.encrypted_key}) or use an unencrypted deploy key")

    def _connect_error(self, exc: BaseException, timeout: float) -> BaseException:
        if isinstance(exc, self.asyncssh.HostKeyNotVerifiable):
            return self.policy.refusal(self.name, exc.reason)
        if isinstance(exc, self.asyncssh.PermissionDenied):
            if self.encrypted_key:
                return self._passphrase_error()
            return BadInputError(f"authentication to {self.name} failed", "pass --identity KEY for a key the "
                                 "device accepts")
        if isinstance(exc, self.asyncssh.KeyImportError):
            return BadInputError(f"a key for {self.name} cannot be used: {_one_line(exc)}")
        if isinstance(exc, (OSError, asyncio.TimeoutError, self.asyncssh.Error)):
            return BadInputError(f"cannot reach {self.name} within {timeout:.0f} s ({type(exc).__name__}: "
                                 f"{_one_line(exc)})", "check the address, port and that sshd runs on the device")
        return exc

    # -- plumbing ------------------------------------------------------------------------
    def wait_for(self, coroutine, timeout: float | None = None):
        """Run `coroutine` on this device's event loop, where the connection lives; its errors pass as they
        are (remote steps go through `await_step`, which turns them into one line)."""
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, timeout) if timeout else coroutine)

    def _failure(self, step: str, exc: BaseException) -> CheckFailedError:
        """One line for a failed remote step; a link that went down says so (keepalives or a reset)."""
        links = (self.asyncssh.DisconnectError, self.asyncssh.SFTPConnectionLost, ConnectionError)
        if self.client.lost or isinstance(exc, links):
            return CheckFailedError(f"connection to {self.name} lost during {step}: "
                                    f"{self.client.lost or _one_line(exc)}", "check that the device is powered "
                                    "and on the network, then deploy again (the upload resumes)")
        return CheckFailedError(f"{step} failed on {self.name}: {_one_line(exc)}",
                                "check the device's free disk space and that the install folder is writable")

    def remaining(self) -> float:
        """Seconds left before this host's overall deadline."""
        return self.deadline - time.monotonic()

    def _past_deadline(self, step: str) -> CheckFailedError:
        return CheckFailedError(f"the deploy to {self.name} ran past its {self.host_timeout:g} s deadline "
                                f"(during {step})", "the device is too slow or hangs; raise --host-timeout if "
                                "it is only slow")

    def await_step(self, step: str, coroutine, timeout: float | None = None, grace: float = 0.0):
        """Await a remote step; `grace` lets a step's own, cleaner timeout fire first. No step outlives
        the host's deadline."""
        limit = timeout + grace if timeout else None
        left = self.remaining()
        by_deadline = limit is None or left < limit
        if left <= 0:
            coroutine.close()
            raise self._past_deadline(step)
        try:
            return self.wait_for(coroutine, left if by_deadline else limit)
        except (asyncio.TimeoutError, TimeoutError) as exc:
            if self.client.lost:
                raise self._failure(step, exc) from exc
            if by_deadline:
                raise self._past_deadline(step) from exc
            raise CheckFailedError(f"{step} on {self.name} timed out after {timeout:g} s",
                                   "the device is overloaded or the step hangs there") from exc
        except CheckFailedError:
            raise  # a step's own one-line verdict (a stalled transfer)
        except Exception as exc:
            raise self._failure(step, exc) from exc

    async def _kill(self, pid: str) -> None:
        """Kill a timed-out command's process group (sshd made it a session leader), or the process."""
        with suppress(Exception):  # best effort: the timeout is reported either way
            await self.conn.run(f"kill -KILL -- -{pid} 2>/dev/null || kill -KILL {pid}", timeout=10)

    # -- the Device interface ------------------------------------------------------------------
    def run(self, argv: list[str], check: bool = False, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run argv; `timeout` seconds (default COMMAND_TIMEOUT) before the command is killed on the
        device and CheckFailedError says so. A device that vanishes is noticed sooner, by the keepalives."""
        limit = COMMAND_TIMEOUT if timeout is None else timeout
        command = shlex.join(argv)
        step = f"`{command if len(command) <= 80 else command[:77] + '...'}`"

        async def execute():
            # The wrapper prints its pid (then execs argv, keeping the pid) so that a timed-out command
            # can be killed: sshd refuses channel signals for root logins, and would signal only one process.
            process = await self.conn.create_process(f"sh -c 'echo $$; exec \"$@\"' edgetl {command}")
            pid = ""

            async def finish():
                nonlocal pid
                pid = (await process.stdout.readline()).strip()
                return await process.wait()
            try:
                return await asyncio.wait_for(finish(), limit)
            finally:
                if process.returncode is None and pid.isdigit() and not self.client.lost:
                    await self._kill(pid)
                process.close()

        result = self.await_step(step, execute(), limit, grace=30)
        if result.exit_status is None and result.exit_signal is None and self.client.lost:
            raise self._failure(step, ConnectionError(self.client.lost))
        completed = subprocess.CompletedProcess(argv, result.exit_status if result.exit_status is not None else 255,
                                                result.stdout or "", result.stderr or "")
        if check and completed.returncode != 0:
            last = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise CheckFailedError(f"{argv[0]} failed on {self.name}: {last}")
        return completed

    def spawn(self, argv: list[str]) -> "SshProcess":
        """A process that lives until `.close()` or the connection drops (its stdin ends): the deploy lock."""
        process = self.await_step(f"`{argv[0]}`", self.conn.create_process(shlex.join(argv)), SHORT_TIMEOUT)
        return SshProcess(self, process, f"`{argv[0]}`")

    def upload(self, bundle: Path, target: str) -> None:
        present = {}
        listing = self.run(["sh", "-c", f"cd {shlex.quote(target)} && find . -type f -exec sha256sum {{}} +"],
                           timeout=SHORT_TIMEOUT * 5)  # hashes what a killed upload left: large files on SD cards
        for line in listing.stdout.splitlines():
            digest, _, name = line.partition("  ")
            present[name.removeprefix("./")] = digest
        files = sorted(p for p in bundle.rglob("*") if p.is_file())
        folders = sorted({str(Path(target) / p.parent.relative_to(bundle)) for p in files})
        self.run(["mkdir", "-p", *folders], check=True, timeout=SHORT_TIMEOUT)
        for path in files:
            name = path.relative_to(bundle).as_posix()
            if present.get(name) != sha256_file(path):
                self.await_step(f"upload of {name}", self._put(path, f"{target}/{name}", name))

    async def _put(self, path: Path, remote: str, name: str) -> None:
        """sftp.put, failing after `stall_timeout` s without a block written."""
        progress = []
        await self._watched(self.sftp.put(str(path), remote, progress_handler=lambda *_: progress.append(1)),
                            f"upload of {name}", lambda: len(progress))

    async def _watched(self, coroutine, what: str, progress) -> None:
        """Await an SFTP coroutine while `progress()` keeps changing at least every `stall_timeout` s.

        A stalled one is abandoned, not awaited: cancelling it would wait for the dead sftp-server to
        answer a close; close() drops the connection under it instead."""
        task = asyncio.ensure_future(coroutine)
        task.add_done_callback(lambda done: done.cancelled() or done.exception())  # an abandoned one stays quiet
        loop = asyncio.get_running_loop()
        seen, since = progress(), loop.time()
        while not task.done():
            await asyncio.wait({task}, timeout=min(1.0, self.stall_timeout))
            if progress() != seen:
                seen, since = progress(), loop.time()
            elif not task.done() and loop.time() - since > self.stall_timeout:
                task.cancel()
                raise self._stalled(what)
        task.result()

    def _stalled(self, what: str) -> CheckFailedError:
        self.stalled = True  # its SFTP session is dead: close() does not wait for it
        return CheckFailedError(f"{what} to {self.name} stalled: no progress for {self.stall_timeout:g} s",
                                "the device's disk or sftp-server hangs: check it, then deploy again; "
                                "--stall-timeout gives a slow link longer")

    def read_text(self, path: str) -> str | None:
        result = self.run(["cat", path], timeout=SHORT_TIMEOUT)
        return result.stdout if result.returncode == 0 else None

    def write_text(self, path: str, text: str, mode: int | None = None) -> None:
        """Atomically (a unique temporary file, synced, renamed); `mode` from the file's creation on."""
        tmp = f"{path}.{secrets.token_hex(4)}.tmp"  # unique: two writers never share a temporary file
        attrs = self.asyncssh.SFTPAttrs(permissions=mode) if mode is not None else self.asyncssh.SFTPAttrs()

        async def put() -> None:
            async with self.sftp.open(tmp, "w", attrs) as handle:
                await handle.write(text)

        # A small file: one unit of progress, bounded like a stalled transfer.
        self.await_step(f"writing {path}", self._watched(put(), f"writing {path}", lambda: None), SHORT_TIMEOUT)
        self.run(["sync", tmp], timeout=SHORT_TIMEOUT)  # on disk before it replaces the old one
        self.run(["mv", "-f", tmp, path], check=True, timeout=SHORT_TIMEOUT)

    def close(self) -> None:
        """Never raises: it runs in `finally` blocks, where an error would hide the deploy's own."""
        if self.loop.is_closed():
            return
        try:
            with suppress(Exception):
                if self.sftp is not None and not self.stalled:  # a stalled SFTP session never answers its exit
                    self.sftp.exit()
                self.conn.close()
                self.wait_for(self.conn.wait_closed(), 5)
            with suppress(Exception):  # what a stalled transfer left: ended, so closing the loop stays quiet
                pending = asyncio.all_tasks(self.loop)
                for task in pending:
                    task.cancel()
                if pending:
                    self.loop.run_until_complete(asyncio.wait(pending, timeout=5))
        finally:
            self.loop.close()


def _pipe(device: SshDevice, stream, step: str) -> SimpleNamespace:
    """A remote output read synchronously, like a pipe of subprocess.Popen(text=True)."""
    return SimpleNamespace(readline=lambda: device.await_step(step, stream.readline(), SHORT_TIMEOUT),
                           read=lambda: device.await_step(step, stream.read(), SHORT_TIMEOUT))


class SshProcess:
    """What `SshDevice.spawn` returns: stdout, stderr, wait() and close(), as LocalProcess has."""

    def __init__(self, device: SshDevice, process, step: str):
        self.device, self.process, self.step = device, process, step
        self.stdout, self.stderr = _pipe(device, process.stdout, step), _pipe(device, process.stderr, step)

    def wait(self) -> int:
        result = self.device.await_step(self.step, self.process.wait(), 30)
        return result.exit_status if result.exit_status is not None else 255

    def close(self) -> None:
        """Closes its standard input (the process exits) and the channel; never raises, like close()."""
        if not self.device.loop.is_closed():
            with suppress(Exception):
                self.process.stdin.write_eof()
            with suppress(Exception):
                self.process.close()
                self.device.wait_for(self.process.wait_closed(), 10)
