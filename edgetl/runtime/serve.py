"""`edgetl run --serve PORT`: a live page for headless devices (most Pis and Jetsons).

A small threaded HTTP server: `/` is a page showing the annotated stream and the
latest predictions, `/stream.mjpg` the annotated frames as MJPEG
(multipart/x-mixed-replace, which every browser plays in an <img>), and
`/predictions.json` the latest result. Only the latest frame is kept; slow
viewers skip frames instead of growing memory. Standard library + OpenCV only.

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

import base64
import errno
import hashlib
import hmac
import html
import ipaddress
import json
import os
import re
import secrets
import socket
import socketserver
import stat
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable
from urllib.parse import parse_qs, quote, urlsplit

from edgetl.errors import BadInputError, require
from edgetl.runtime.sinks import annotate, json_line
from edgetl.runtime.stream import Result

STYLE = """body{font-family:system-ui,sans-serif;background:#111;color:#eee;margin:1.5em}
img{max-width:100%;border:1px solid #444}table{border-collapse:collapse;margin-top:1em}
td{padding:.2em .8em}#stats{color:#9c9}"""

# Labels come from the model's sidecar: they are put in the page as text nodes, never parsed as HTML.
SCRIPT = """
if(location.search){history.replaceState(null,'',location.pathname);}
const stats=document.getElementById('stats'),table=document.getElementById('top');
function row(cells){const tr=document.createElement('tr');for(const text of cells){
const td=document.createElement('td');td.textContent=text;tr.appendChild(td);}return tr;}
async function poll(){try{const r=await fetch('/predictions.json',{cache:'no-store'});
if(r.ok){const p=await r.json();if(p.frame!==undefined){stats.textContent=
`frame ${p.frame} - ${p.latency_ms.infer.toFixed(1)} ms inference - ${p.fps.toFixed(1)} FPS`;
table.replaceChildren(...p.topk.map(([l,s])=>row([String(l),(100*s).toFixed(1)+'%'])));}}}
catch(e){} setTimeout(poll,300);} poll();
"""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edgetl live</title>
<style>__STYLE__</style></head>
<body><h2>edgetl live: __TITLE__</h2><img id="stream" src="/stream.mjpg" alt="live stream">
<div id="stats">waiting for frames...</div><table id="top"></table>
<script>__SCRIPT__</script></body></html>""".replace("__STYLE__", STYLE).replace("__SCRIPT__", SCRIPT)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only our own inline script and style run (by hash): even an HTML label that slipped through executes nothing.
CSP = (f"default-src 'none'; img-src 'self'; connect-src 'self'; script-src {_sha256(SCRIPT)}; "
       f"style-src {_sha256(STYLE)}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
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


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a connection cap and no busy loop when accept() runs out of fds."""

    daemon_threads = True
    request_queue_size = 32

    def __init__(self, address, handler, max_connections: int):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        self.starved = False
        super().__init__(address, handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # not HTTPServer's: its getfqdn() can hang without DNS
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def get_request(self):
        try:
            request = super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # The pending connection stays in the backlog, so select() says "readable" at
                # once: without a pause this loop would spin a core until a descriptor frees up.
                try:
                    if not self.starved:
                        self.starved = True
                        _warn(f"live page: cannot accept viewers ({os.strerror(exc.errno)}); retrying")
                finally:
                    time.sleep(0.25)
            raise
        self.starved = False
        return request

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            self._refuse(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _refuse(self, request) -> None:
        """Over the cap: a 503 written from the accept loop, without a thread, never blocking."""
        body = f"the live page has {self.max_connections} viewers already; try again later\n".encode()
        try:
            request.setblocking(False)
            try:
                request.recv(65536)  # read what the client sent, so closing sends FIN rather than RST
            except OSError:
                pass
            request.send(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 5\r\n"
                         b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        except OSError:
            pass

    def handle_error(self, request, client_address) -> None:
        """Viewers that vanish or time out are normal; anything else is one line, not a traceback."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            _warn(f"live page: {type(exc).__name__}: {exc}")


def _warn(message: str) -> None:
    """console.warn, or a raw write to fd 2 when it fails: without descriptors, rich's lazy imports do."""
    try:
        from edgetl.console import warn

        warn(message)
    except Exception:
        try:
            os.write(2, f"warning: {message}\n".encode())
        except OSError:
            pass


class LiveServer:
    def __init__(self, port: int, host: str = "127.0.0.1", title: str = "model", token: str | None = None,
                 max_connections: int = 16, socket_timeout: float = 30.0, allowed_hosts: Iterable[str] = ()):
        if token is None and not is_loopback(host):
            raise BadInputError(f"a live page on {host or 'every address'} would show the camera to anyone "
                                "who can reach this machine", "serve on 127.0.0.1, or give it a token "
                                "(edgetl run --serve-token-file PATH creates one)")
        if token is not None:
            _check_token(token, "given")
        if max_connections < 1 or not socket_timeout > 0:
            raise BadInputError("the live page needs max_connections >= 1 and socket_timeout > 0")
        self.cv2 = require("cv2", "device", "serving the live page")
        self.condition = threading.Condition()
        self.jpeg: bytes | None = None
        self.latest: dict = {}
        self.sequence = 0
        self.closed = False
        self.host, self.token = host, token
        name = socket.gethostname().lower().rstrip(".")
        names = [name, f"{name}.local", "localhost", host, *allowed_hosts]  # the bind name, if it is one
        self.allowed_hosts = {h.lower().rstrip(".") for h in names if h not in WILDCARDS}
        page = PAGE.replace("__TITLE__", html.escape(title)).encode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = socket_timeout  # StreamRequestHandler applies it to the socket: reads and writes

            def log_message(self, *args) -> None:  # keep the terminal for results
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urlsplit(self.path)
                if not server.host_allowed(self.headers.get("Host")):
                    self._send(403, "text/plain; charset=utf-8", b"forbidden: unexpected Host header\n")
                    return
                if not server.authorised(self._tokens(url.query)):
                    self._send(403, "text/plain; charset=utf-8", b"forbidden: this live page needs its token; "
                               b"open the URL edgetl run printed (it ends in ?token=...)\n")
                    return
                if url.path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", page, cookie=server.token is not None)
                elif url.path == "/predictions.json":
                    with server.condition:
                        body = json.dumps(server.latest).encode()
                    self._send(200, "application/json", body)
                elif url.path == "/stream.mjpg":
                    self._stream()
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found\n")

            def _tokens(self, query: str) -> list[str]:
                found = parse_qs(query).get("token", [])
                for part in self.headers.get("Cookie", "").split(";"):
                    key, _, value = part.strip().partition("=")
                    if key == server.cookie_name:
                        found.append(value)
                scheme, _, value = self.headers.get("Authorization", "").strip().partition(" ")
                if scheme.lower() in ("bearer", "token"):
                    found.append(value.strip())
                return found

            def _headers(self, code: int, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Content-Security-Policy", CSP)
                self.send_header("Referrer-Policy", "no-referrer")

            def _send(self, code: int, kind: str, body: bytes, cookie: bool = False) -> None:
                self._headers(code, kind)
                self.send_header("Content-Length", str(len(body)))
                if cookie:
                    self.send_header("Set-Cookie", f"{server.cookie_name}={server.token}; Path=/; HttpOnly; "
                                                   "SameSite=Strict")
                self.end_headers()
                self.wfile.write(body)

            def _stream(self) -> None:
                self._headers(200, "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                seen = -1
                try:
                    while True:
                        with server.condition:
                            server.condition.wait_for(lambda: server.sequence != seen or server.closed, timeout=5)
                            if server.closed:
                                return
                            jpeg, seen = server.jpeg, server.sequence
                        if jpeg is None:
                            continue
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                except OSError:  # the viewer left, or stopped reading for socket_timeout seconds
                    self.close_connection = True

        try:
            self.httpd = _Server((host, port), Handler, max_connections)
        except OSError as exc:
            hint = {errno.EADDRINUSE: "choose another --serve port",
                    errno.EACCES: "ports below 1024 need root: choose another --serve port, e.g. 8080"}.get(
                exc.errno, "check --serve-host is an address of this machine")
            raise BadInputError(f"cannot serve on {host}:{port} ({exc.strerror or exc})", hint) from exc
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
        latest = json.loads(json_line(result))
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
