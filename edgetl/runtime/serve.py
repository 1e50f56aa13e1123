"""`edgetl run --serve PORT`: a live page for headless devices (most Pis and Jetsons).

A small threaded HTTP server: `/` is a page showing the annotated stream and the
latest predictions, `/stream.mjpg` the annotated frames as MJPEG
(multipart/x-mixed-replace, which every browser plays in an <img>), and
`/predictions.json` the latest result, `/status.json` the run's health (the
heartbeat's object). Only the latest frame is kept; slow
viewers skip frames instead of growing memory. Standard library + OpenCV only.
This module holds the frames, the token and the checks; serve_http.py the page,
the request handler and the server.

It shows a camera, so nobody but the device sees it without a secret:
- it listens on loopback by default; any other address needs a token (like
  Jupyter's: generated, kept on the device in a 0600 file, printed with the URL).
  `/?token=...` sets an HttpOnly, SameSite=Strict cookie that authorises the
  page's own requests; scripts may send `Authorization: Bearer TOKEN` instead.
- the Host header must be an IP literal, localhost, this machine's name or an
  allowed name, so a DNS-rebinding page in a viewer's browser cannot read it;
- labels and the model's name are text, never HTML (textContent, a strict CSP);
- a cap on concurrent connections, a socket timeout so silent or stalled
  clients free their thread, and no busy loop when file descriptors run out.
"""

from __future__ import annotations

import errno
import hmac
import html
import ipaddress
import os
import re
import secrets
import socket
import stat
import threading
from pathlib import Path
from typing import Iterable
from urllib.parse import quote

from edgetl.errors import BadInputError, require
from edgetl.runtime.serve_http import PAGE, CappedHTTPServer, handler_for
from edgetl.runtime.sinks import annotate, result_object
from edgetl.runtime.stream import Result

TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]{16,}")  # URL-, cookie- and header-safe as is
WILDCARDS = ("", "0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: addresses only this machine can reach."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_token_path() -> Path:
    """$XDG_CONFIG_HOME/edgetl/serve-token (~/.config/edgetl/serve-token)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    return Path(base if os.path.isabs(base) else Path.home() / ".config") / "edgetl" / "serve-token"


def _check_token(token: str, where: str) -> str:
    if not TOKEN_PATTERN.fullmatch(token):
        raise BadInputError(f"the live page token {where} is not 16+ URL-safe characters (A-Z a-z 0-9 . _ ~ -)",
                            "delete it to have a new one generated")
    return token


def load_or_create_token(path: str | os.PathLike) -> str:
    """The token kept on the device: read from `path`, or generated into it (mode 0600) if missing.

    A file only its owner can change and others cannot read, like an SSH key: a token
    other users can read or replace protects nothing.
    """
    from edgetl import atomic

    path = Path(path).expanduser()
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        mask = os.umask(0o077)  # atomic publishes with 0666 & ~umask: the token is never readable by others
        try:
            atomic.write_text(path, secrets.token_urlsafe(24) + "\n")
        finally:
            os.umask(mask)
        os.chmod(path, 0o600)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read the live page token file {path} ({exc})",
                            "pass a readable file with --serve-token-file, or delete it to regenerate it") from exc
    if not stat.S_ISREG(mode):
        raise BadInputError(f"live page token file {path} is not a regular file", "pass a file path")
    if mode & 0o026:
        raise BadInputError(f"live page token file {path} is readable or writable by other users "
                            f"(mode {stat.S_IMODE(mode):04o})", f"chmod 600 {path}")
    if not text:
        raise BadInputError(f"live page token file {path} is empty", "delete it to have a new one generated")
    return _check_token(text, f"in {path}")


def serve_token(host: str, token_file: str | os.PathLike | None = None) -> tuple[str | None, Path | None]:
    """(token, its file) for `--serve-host HOST`: none on loopback unless a file is asked for."""
    if token_file is None and is_loopback(host):
        return None, None
    path = Path(token_file).expanduser() if token_file is not None else default_token_path()
    return load_or_create_token(path), path


def _check_settings(host: str, token: str | None, max_connections: int, socket_timeout: float) -> None:
    """Refuse, before binding anything, a page others could reach without a secret or one that cannot work."""
    if token is None and not is_loopback(host):
        raise BadInputError(f"a live page on {host or 'every address'} would show the camera to anyone "
                            "who can reach this machine", "serve on 127.0.0.1, or give it a token "
                            "(edgetl run --serve-token-file PATH creates one)")
    if token is not None:
        _check_token(token, "given")
    if max_connections < 1 or not socket_timeout > 0:
        raise BadInputError("the live page needs max_connections >= 1 and socket_timeout > 0")


def _allowed_host_names(host: str, allowed_hosts: Iterable[str]) -> set[str]:
    """The names a Host header may carry: this machine's, localhost, the bind name (if it is one), any allowed."""
    name = socket.gethostname().lower().rstrip(".")
    names = [name, f"{name}.local", "localhost", host, *allowed_hosts]
    return {h.lower().rstrip(".") for h in names if h not in WILDCARDS}


def _bind(host: str, port: int, handler, max_connections: int) -> CappedHTTPServer:
    """The listening server, or a BadInputError that says what to change when the address is taken or refused."""
    try:
        return CappedHTTPServer((host, port), handler, max_connections)
    except OSError as exc:
        hint = {errno.EADDRINUSE: "choose another --serve port",
                errno.EACCES: "ports below 1024 need root: choose another --serve port, e.g. 8080"}.get(
            exc.errno, "check --serve-host is an address of this machine")
        raise BadInputError(f"cannot serve on {host}:{port} ({exc.strerror or exc})", hint) from exc


class LiveServer:
    """The live page of one `edgetl run`: call it with each Result; viewers get the latest one."""

    def __init__(self, port: int, host: str = "127.0.0.1", title: str = "model", token: str | None = None,
                 max_connections: int = 16, socket_timeout: float = 30.0, allowed_hosts: Iterable[str] = (),
                 status=None):
        _check_settings(host, token, max_connections, socket_timeout)
        self.status = status  # a RunStatus, served as /status.json
        self.cv2 = require("cv2", "device", "serving the live page")
        self.condition = threading.Condition()
        self.jpeg: bytes | None = None
        self.latest: dict = {}
        self.sequence = 0
        self.closed = False
        self.host, self.token = host, token
        self.allowed_hosts = _allowed_host_names(host, allowed_hosts)
        page = PAGE.replace("__TITLE__", html.escape(title)).encode()
        self.httpd = _bind(host, port, handler_for(self, page, socket_timeout), max_connections)
        self.port = self.httpd.server_address[1]
        self.cookie_name = f"edgetl_token_{self.port}"  # cookies ignore ports: one per live page
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="edgetl-serve")
        self.thread.start()

    def host_allowed(self, header: str | None) -> bool:
        """DNS rebinding: a page from evil.example that re-points its name at this device shows up here
        with `Host: evil.example`; IP literals, localhost and this machine's names are fine.
        No Host header at all is no browser (every browser sends one), so no rebinding."""
        if header is None:
            return True
        host = header.strip().lower()
        if host.startswith("["):
            literal, _, rest = host[1:].partition("]")
            if rest and not (rest.startswith(":") and rest[1:].isdigit()):
                return False
            host = literal
        else:
            name, sep, port = host.rpartition(":")
            if sep:
                if not port.isdigit():
                    return False
                host = name
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            return host.rstrip(".") in self.allowed_hosts

    def authorised(self, supplied: list[str]) -> bool:
        if self.token is None:
            return True
        expected = self.token.encode()
        return any(hmac.compare_digest(candidate.encode("utf-8", "replace"), expected) for candidate in supplied)

    def urls(self) -> list[str]:
        """Where to open the page (with ?token= when it has one): this machine's name and loopback for 0.0.0.0."""
        query = f"?token={quote(self.token)}" if self.token else ""
        hosts = [socket.gethostname(), "127.0.0.1"] if self.host in WILDCARDS else [self.host]
        return [f"http://{f'[{h}]' if ':' in h else h}:{self.port}/{query}" for h in hosts]

    def __call__(self, result: Result) -> None:
        ok, encoded = self.cv2.imencode(".jpg", annotate(result), [self.cv2.IMWRITE_JPEG_QUALITY, 80])
        latest = result_object(result)
        latest["fps"] = result.fps
        with self.condition:
            if ok:
                self.jpeg = encoded.tobytes()
            self.latest = latest
            self.sequence += 1
            self.condition.notify_all()

    def close(self) -> None:
        with self.condition:
            self.closed = True
            self.condition.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
