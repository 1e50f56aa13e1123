"""The HTTP side of the live page (`edgetl run --serve`): the page and its CSP, the request handler,
and a threaded server that caps its viewers.

The handler answers for one `LiveServer` (serve.py), which owns the frames, the token and the Host
check; this module only turns them into responses. Standard library only.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

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
`${p.unknown?'unknown':String(p.label)} - frame ${p.frame} - ${p.latency_ms.infer.toFixed(1)} ms inference - ${p.fps.toFixed(1)} FPS`;
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
PLAIN_TEXT = "text/plain; charset=utf-8"
HEADER_SECONDS = 5.0  # from connect to a complete request (or the socket timeout, when shorter)
PENDING_CONNECTIONS = 64  # open connections at once, authenticated or not (at least the viewer cap)


class LiveRequestHandler(BaseHTTPRequestHandler):
    """One viewer's request: Host check, token check, then the page, the latest result or the MJPEG stream.

    `live` (the LiveServer) and `page` are set per live page by `handler_for`."""

    live = None
    page = b""

    def log_message(self, *args) -> None:  # keep the terminal for results
        pass

    def setup(self) -> None:
        """The request and its token must arrive within HEADER_SECONDS, however slowly it trickles in:
        a connection that has not authenticated never holds a viewer's place."""
        super().setup()
        self.deadline = threading.Timer(min(HEADER_SECONDS, self.timeout), self._drop)
        self.deadline.daemon = True
        self.deadline.start()

    def _drop(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def finish(self) -> None:
        self.deadline.cancel()
        super().finish()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        self.deadline.cancel()  # the request is in; answering it is bounded by the socket timeout
        if not self.live.host_allowed(self.headers.get("Host")):
            self._send(403, PLAIN_TEXT, b"forbidden: unexpected Host header\n")
            return
        if not self.live.authorised(self._tokens(url.query)):
            self._send(403, PLAIN_TEXT, b"forbidden: this live page needs its token; "
                       b"open the URL edgetl run printed (it ends in ?token=...)\n")
            return
        if not self.server.slots.acquire(blocking=False):
            body = f"the live page has {self.server.max_connections} viewers already; try again later\n"
            self._send(503, PLAIN_TEXT, body.encode())
            return
        try:
            self._answer(url)
        finally:
            self.server.slots.release()

    def _answer(self, url) -> None:
        if url.path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", self.page, cookie=self.live.token is not None)
        elif url.path == "/predictions.json":
            with self.live.condition:
                body = json.dumps(self.live.latest).encode()
            self._send(200, "application/json", body)
        elif url.path == "/status.json":  # the run's health (runtime/status.py), as the heartbeat file has it
            status = self.live.status
            self._send(200, "application/json", json.dumps(status.latest if status else {}).encode())
        elif url.path == "/stream.mjpg":
            self._stream()
        else:
            self._send(404, PLAIN_TEXT, b"not found\n")

    def _tokens(self, query: str) -> list[str]:
        """Every token the request offers: the ?token= query, the page's cookie, a Bearer header."""
        found = parse_qs(query).get("token", [])
        for part in self.headers.get("Cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == self.live.cookie_name:
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
            self.send_header("Set-Cookie", f"{self.live.cookie_name}={self.live.token}; Path=/; HttpOnly; "
                                           "SameSite=Strict")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        self._headers(200, "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        live, seen = self.live, -1
        try:
            while True:
                with live.condition:
                    live.condition.wait_for(lambda: live.sequence != seen or live.closed, timeout=5)
                    if live.closed:
                        return
                    jpeg, seen = live.jpeg, live.sequence
                if jpeg is None:
                    continue
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                 + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
        except OSError:  # the viewer left, or stopped reading for socket_timeout seconds
            self.close_connection = True


def handler_for(live, page: bytes, socket_timeout: float) -> type[LiveRequestHandler]:
    """A handler class for one live page: http.server builds a handler per request from a class."""
    # StreamRequestHandler applies `timeout` to the socket: reads and writes
    return type("Handler", (LiveRequestHandler,), {"live": live, "page": page, "timeout": socket_timeout})


class CappedHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a connection cap and no busy loop when accept() runs out of fds."""

    daemon_threads = True
    request_queue_size = 32

    def __init__(self, address, handler, max_connections: int):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.slots = threading.BoundedSemaphore(max_connections)  # authenticated viewers (the handler's)
        self.max_connections = max_connections
        self.max_pending = max(PENDING_CONNECTIONS, max_connections)
        self.pending = threading.BoundedSemaphore(self.max_pending)  # every open connection, each bounded
        # in time until it authenticates (HEADER_SECONDS), so slow sockets cannot keep viewers out
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
        if not self.pending.acquire(blocking=False):
            self._refuse(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.pending.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.pending.release()

    def _refuse(self, request) -> None:
        """Over the connection cap: a 503 written from the accept loop, without a thread, never blocking."""
        body = f"the live page has {self.max_pending} connections open; try again later\n".encode()
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
