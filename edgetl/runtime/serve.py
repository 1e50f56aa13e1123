"""`edgetl run --serve PORT`: a live page for headless devices (most Pis and Jetsons).

A small threaded HTTP server: `/` is a page showing the annotated stream and the
latest predictions, `/stream.mjpg` the annotated frames as MJPEG
(multipart/x-mixed-replace, which every browser plays in an <img>), and
`/predictions.json` the latest result. Only the latest frame is kept; slow
viewers skip frames instead of growing memory. Standard library + OpenCV only.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from edgetl.errors import BadInputError, require
from edgetl.runtime.sinks import annotate, json_line
from edgetl.runtime.stream import Result

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edgetl live</title>
<style>body{font-family:system-ui,sans-serif;background:#111;color:#eee;margin:1.5em}
img{max-width:100%;border:1px solid #444}table{border-collapse:collapse;margin-top:1em}
td{padding:.2em .8em}#stats{color:#9c9}</style></head>
<body><h2>edgetl live: MODEL</h2><img id="stream" src="/stream.mjpg" alt="live stream">
<div id="stats">waiting for frames...</div><table id="top"></table>
<script>
async function poll(){try{const r=await fetch('/predictions.json');const p=await r.json();
if(p.frame!==undefined){document.getElementById('stats').textContent=
`frame ${p.frame} - ${p.latency_ms.infer.toFixed(1)} ms inference - ${p.fps.toFixed(1)} FPS`;
document.getElementById('top').innerHTML=p.topk.map(([l,s])=>`<tr><td>${l}</td><td>${(100*s).toFixed(1)}%</td></tr>`).join('');}}
catch(e){} setTimeout(poll,300);} poll();
</script></body></html>"""


class LiveServer:
    def __init__(self, port: int, host: str = "0.0.0.0", title: str = "model"):
        self.cv2 = require("cv2", "device", "serving the live page")
        self.condition = threading.Condition()
        self.jpeg: bytes | None = None
        self.latest: dict = {}
        self.sequence = 0
        self.closed = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the terminal for results
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path in ("/", "/index.html"):
                    body = PAGE.replace("MODEL", title).encode()
                    self._send(200, "text/html; charset=utf-8", body)
                elif self.path == "/predictions.json":
                    with server.condition:
                        body = json.dumps(server.latest).encode()
                    self._send(200, "application/json", body)
                elif self.path == "/stream.mjpg":
                    self._stream()
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _send(self, code: int, kind: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-store")
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
                except (BrokenPipeError, ConnectionResetError):
                    return

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise BadInputError(f"cannot serve on {host}:{port} ({exc.strerror})", "choose another --serve port") from exc
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="edgetl-serve")
        self.thread.start()

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
