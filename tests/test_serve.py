"""The live page's defences (`edgetl run --serve`): token, Host check, text-only labels, connection cap,
socket timeout, no busy loop without file descriptors, and stream credentials kept out of every output.

Model-free: a real LiveServer on loopback fed with real Results built from synthetic frames; real sockets,
real HTTP, a real OpenCV stream and (when installed) a real headless Chromium.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, run_cli
from edgetl.errors import BadInputError
from edgetl.runtime.serve import LiveServer, load_or_create_token, serve_token
from edgetl.runtime.sinks import json_line
from edgetl.runtime.sources import Frame, SourceError, open_source, redact_url
from edgetl.runtime.stream import Result

TOKEN = "test-token-0123456789abcdef"
XSS = "<img src=x onerror=alert(1)>"


def result(index: int = 0, label: str = "cat", name: str = "synthetic", noisy: bool = False) -> Result:
    rng = np.random.default_rng(index)
    bgr = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) if noisy else np.zeros((240, 320, 3), np.uint8)
    if not noisy:
        bgr[:, :, 2] = 255  # pure red: easy to find in a screenshot
    frame = Frame(index, name, time.time(), Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1])), bgr)
    return Result(frame, [(label, 0.75), ("dog", 0.25)], {"pre": 0.1, "infer": 1.5, "post": 0.1}, 30.0)


@contextlib.contextmanager
def fed(server: LiveServer, label: str = "cat", noisy: bool = False, min_confidence: float | None = None):
    """Feed `server` a result every 20 ms from a thread, like run_stream does."""
    results = [result(i, label, noisy=noisy) for i in range(4 if noisy else 1)]
    for each in results:
        each.min_confidence = min_confidence
    done = threading.Event()

    def feed() -> None:
        number = 0
        while not done.is_set():
            server(results[number % len(results)])
            number += 1
            time.sleep(0.02)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        with server.condition:
            assert server.condition.wait_for(lambda: server.sequence > 0, timeout=30), "no frame fed"
        yield server
    finally:
        done.set()
        feeder.join(timeout=5)
        server.close()


def get(port: int, path: str, headers: dict | None = None, read: bool = True):
    """(status, headers, body) of a GET to 127.0.0.1; an MJPEG body is not read unless `read`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read() if read else response.read(4096)
        return response.status, response.headers, body
    finally:
        conn.close()


def read_until_closed(sock: socket.socket) -> bytes:
    """What the server sent before closing (b"" if it closed without a word)."""
    sock.settimeout(20)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(4096):
            data += chunk
    return data


# --- the token -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::"])
def test_a_listener_off_loopback_needs_a_token(host):
    with pytest.raises(BadInputError, match="anyone who can reach") as caught:
        LiveServer(0, host)
    assert "--serve-token-file" in caught.value.hint


def test_every_path_refuses_a_viewer_without_the_token():
    with fed(LiveServer(0, "0.0.0.0", token=TOKEN)) as server:
        for path in ("/", "/stream.mjpg", "/predictions.json", "/?token=wrong-token-0123456789"):
            code, headers, body = get(server.port, path, read=False)
            assert code == 403 and headers["Content-Type"].startswith("text/plain"), path
            assert b"\xff\xd8" not in body and TOKEN.encode() not in body and "Set-Cookie" not in headers
        wrong = {"Cookie": f"{server.cookie_name}=wrong-token-0123456789", "Authorization": "Bearer nope"}
        assert get(server.port, "/predictions.json", wrong)[0] == 403


def test_the_token_url_sets_a_cookie_that_authorises_the_page_requests():
    with fed(LiveServer(0, "0.0.0.0", token=TOKEN)) as server:
        code, headers, page = get(server.port, f"/?token={TOKEN}")
        assert code == 200 and b"/stream.mjpg" in page
        cookie = headers["Set-Cookie"]
        assert cookie.startswith(f"edgetl_token_{server.port}={TOKEN};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        jar = {"Cookie": cookie.split(";")[0]}
        code, _, body = get(server.port, "/predictions.json", jar)
        assert code == 200 and json.loads(body)["topk"][0][0] == "cat"
        code, headers, chunk = get(server.port, "/stream.mjpg", jar, read=False)
        assert code == 200 and headers["Content-Type"].startswith("multipart/x-mixed-replace")
        assert get(server.port, "/predictions.json", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert any(url.endswith(f":{server.port}/?token={TOKEN}") for url in server.urls())


# --- the Host header (DNS rebinding) ---------------------------------------------------------------------------


def test_host_header_must_name_this_machine():
    with fed(LiveServer(0, "127.0.0.1", allowed_hosts=["pi.lan"])) as server:
        port = server.port
        for bad in ("evil.example.com", f"evil.example.com:{port}", f"127.0.0.1.evil.example.com:{port}",
                    f"localhost:{port}x", ""):
            code, _, body = get(port, "/predictions.json", {"Host": bad})
            assert code == 403 and b"Host" in body, bad
        for good in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", f"[::1]:{port}", f"PI.lan:{port}",
                     f"{socket.gethostname()}:{port}", f"{socket.gethostname()}.local"):
            assert get(port, "/predictions.json", {"Host": good})[0] == 200, good


# --- labels are text -------------------------------------------------------------------------------------------


def test_labels_and_title_are_text_never_html():
    title = '<script>alert("t")</script>'
    with fed(LiveServer(0, "127.0.0.1", title=title), label=XSS) as server:
        code, headers, page = get(server.port, "/")
        _, json_headers, body = get(server.port, "/predictions.json")
    page = page.decode()
    assert code == 200 and title not in page and "&lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt;" in page
    assert "innerHTML" not in page and "textContent" in page
    csp = headers["Content-Security-Policy"]
    assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff" and json_headers["X-Content-Type-Options"] == "nosniff"
    assert json_headers["Content-Type"] == "application/json" and json.loads(body)["topk"][0][0] == XSS


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
                 if Path(p).exists()), None)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (.ci/run installs Debian's chromium)")
def test_a_browser_with_the_token_url_plays_the_page_and_shows_labels_as_text(tmp_path):
    """Chromium opens /?token=... on a 0.0.0.0 listener: the cookie authorises the stream and the JSON
    polls, the script (allowed by its CSP hash) fills the table, and an HTML label stays text."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=4000"]
    with fed(LiveServer(0, "0.0.0.0", title="<i>model</i>", token=TOKEN), label=XSS) as server:
        url = f"http://127.0.0.1:{server.port}/?token={TOKEN}"
        dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        shot = subprocess.run([CHROMIUM, *flags, "--window-size=640,480", f"--screenshot={tmp_path / 'page.png'}",
                               url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "ms inference" in dom.stdout, dom.stdout[-2000:]  # the script ran and /predictions.json answered
    assert "<td>&lt;img src=x onerror=alert(1)&gt;</td>" in dom.stdout and '<img src="x"' not in dom.stdout
    assert "&lt;i&gt;model&lt;/i&gt;" in dom.stdout and "<i>model</i>" not in dom.stdout
    assert "unknown" not in dom.stdout.split("ms inference")[0][-200:]  # no threshold: the label is named
    with fed(LiveServer(0, "127.0.0.1", title="m"), label="cat", min_confidence=0.9) as server:
        unsure = subprocess.run([CHROMIUM, *flags, "--dump-dom", f"http://127.0.0.1:{server.port}/"],
                                capture_output=True, text=True, timeout=120)
    assert "unknown - frame 0" in unsure.stdout, unsure.stdout[-2000:]  # top-1 0.75 < 0.9: the page says so
    page = np.asarray(Image.open(tmp_path / "page.png").convert("RGB")).astype(int)
    red = (page[:, :, 0] > 200) & (page[:, :, 1] < 60) & (page[:, :, 2] < 60)
    assert shot.returncode == 0 and red.sum() > 1000, "the MJPEG stream (all red) did not play"


# --- connections -----------------------------------------------------------------------------------------------


def test_slow_sockets_that_never_authenticate_do_not_lock_viewers_out():
    """Silent or trickling connections hold no viewer's place and are dropped within the header deadline."""
    with fed(LiveServer(0, "127.0.0.1", max_connections=2, socket_timeout=60)) as server:
        silent = [socket.create_connection(("127.0.0.1", server.port), timeout=15) for _ in range(8)]
        try:
            silent[0].sendall(b"GET /predictions.json HTTP/1.0\r\nHo")  # trickles, never finishes
            assert get(server.port, "/predictions.json")[0] == 200  # at once, though 8 > 2 are open
            started = time.monotonic()
            for sock in silent:
                assert read_until_closed(sock) == b"", "dropped without an answer"
            assert time.monotonic() - started < 12
        finally:
            for sock in silent:
                sock.close()


def test_viewers_over_the_cap_get_503_and_the_page_recovers():
    with fed(LiveServer(0, "127.0.0.1", max_connections=1, socket_timeout=60)) as server:
        viewer = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            viewer.sendall(b"GET /stream.mjpg HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += viewer.recv(1)
            assert head.startswith(b"HTTP/1.0 200")  # it holds the only viewer slot while it watches
            code, _, body = get(server.port, "/predictions.json")
            assert code == 503 and b"1 viewers already" in body
        finally:
            viewer.close()
        deadline, code = time.monotonic() + 30, None
        while code != 200 and time.monotonic() < deadline:  # the stream's thread notices the viewer left
            code = get(server.port, "/predictions.json")[0]
            time.sleep(0.05)
        assert code == 200


def test_connections_over_the_connection_cap_get_503_from_the_accept_loop(monkeypatch):
    from edgetl.runtime import serve_http

    monkeypatch.setattr(serve_http, "PENDING_CONNECTIONS", 3)
    with fed(LiveServer(0, "127.0.0.1", max_connections=1, socket_timeout=60)) as server:
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(3)]
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            assert read_until_closed(extra).startswith(b"HTTP/1.0 503 ")
        finally:
            for sock in held + [extra]:
                sock.close()


def test_a_silent_client_is_disconnected_after_the_socket_timeout():
    with fed(LiveServer(0, "127.0.0.1", max_connections=1, socket_timeout=0.5)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:
            assert read_until_closed(silent) == b"", "the server closes a client that never sends a request"
        deadline, code = time.monotonic() + 30, None
        while code != 200 and time.monotonic() < deadline:
            code = get(server.port, "/predictions.json")[0]
        assert code == 200, "its slot is free again"


def test_a_stalled_stream_viewer_times_out_and_frees_its_slot():
    """A viewer that opens the MJPEG stream and stops reading: writes to it time out too."""
    with fed(LiveServer(0, "127.0.0.1", max_connections=1, socket_timeout=0.5), noisy=True) as server:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.settimeout(10)
        stalled.connect(("127.0.0.1", server.port))
        try:
            stalled.sendall(b"GET /stream.mjpg HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += stalled.recv(1)
            assert head.startswith(b"HTTP/1.0 200")  # then it never reads again
            deadline, code = time.monotonic() + 60, None
            while code != 200 and time.monotonic() < deadline:
                code = get(server.port, "/predictions.json")[0]  # 503 while the stalled viewer holds the slot
                time.sleep(0.1)
            assert code == 200
            read_until_closed(stalled)  # what was buffered, then the end: the server closed it (a timeout fails here)
        finally:
            stalled.close()


EMFILE_CHILD = r"""
import os, resource, sys, time
import edgetl.console
from edgetl.runtime.serve import LiveServer
server = LiveServer(0, "127.0.0.1", max_connections=1000, socket_timeout=60)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
hold = []
try:
    while True:
        hold.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
print(server.port, flush=True)
sys.stdin.readline()  # the parent has connected: accept() now fails with EMFILE
start = sum(os.times()[:2])
time.sleep(2.5)
print(f"{sum(os.times()[:2]) - start:.3f}", flush=True)
for fd in hold:
    os.close(fd)
sys.stdin.readline()
server.close()
"""


def test_running_out_of_file_descriptors_does_not_spin_a_core():
    """With every descriptor taken, a waiting viewer makes accept() fail at once, again and again; the
    server must wait between tries (CPU stays far below the wall time) and serve it once fds free up."""
    child = subprocess.Popen([sys.executable, "-c", EMFILE_CHILD], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())
        viewer = socket.create_connection(("127.0.0.1", port), timeout=30)  # completes in the kernel's backlog
        viewer.sendall(b"GET /predictions.json HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        child.stdin.write("go\n")
        child.stdin.flush()
        cpu = float(child.stdout.readline())
        answer = read_until_closed(viewer)
        viewer.close()
        child.stdin.write("done\n")
        child.stdin.flush()
        _, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert "cannot accept viewers" in stderr and stderr.count("cannot accept viewers") == 1, stderr
    assert cpu < 0.5, f"{cpu:.2f} s of CPU in 2.5 s without file descriptors: the accept loop spins"
    assert answer.startswith(b"HTTP/1.0 200"), "once descriptors are free the waiting viewer is served"


# --- stream credentials ----------------------------------------------------------------------------------------


def test_redact_url():
    assert redact_url("rtsp://user:pa%40ss@10.0.0.5:554/s") == "rtsp://***@10.0.0.5:554/s"
    assert redact_url("rtsp://user:p@ss@cam/s?x=1") == "rtsp://***@cam/s?x=1"  # an unescaped @ in the password
    assert redact_url("http://cam/video.cgi?user=admin&pwd=hunter2&fps=5") == \
        "http://cam/video.cgi?user=admin&pwd=***&fps=5"
    assert redact_url("rtspsrc location=rtsp://u:secret@cam/x user-pw=secret2 ! appsink") == \
        "rtspsrc location=rtsp://***@cam/x user-pw=*** ! appsink"
    for unchanged in ("rtsp://cam/s@2x", "photos/key=1.jpg", "camera 0", "/dev/video0"):
        assert redact_url(unchanged) == unchanged


def test_stream_errors_never_show_the_password():
    for spec in ("rtsp://user:secret@127.0.0.1:9/x", "rtspsrc location=rtsp://u:secret@127.0.0.1:9/x ! appsink",
                 "rtsps://user:secret@127.0.0.1:9/x"):
        with pytest.raises(SourceError) as caught:
            open_source(spec)
        assert "secret" not in str(caught.value) and "***@127.0.0.1:9/x" in str(caught.value)


def test_a_stream_with_credentials_reaches_no_output_with_them():
    """A real http://user:secret@... MJPEG stream (a live page) opened by OpenCV: its description, frames,
    JSON lines, and a second live page's /predictions.json and page show the URL without the password."""
    with fed(LiveServer(0, "127.0.0.1")) as camera, fed(LiveServer(0, "127.0.0.1")) as page:
        source = open_source(f"http://user:secret@127.0.0.1:{camera.port}/stream.mjpg")
        try:
            frame = next(iter(source.frames()))
        finally:
            source.close()
        seen = Result(frame, [("cat", 1.0)], {"pre": 0.0, "infer": 0.0, "post": 0.0}, 1.0)
        line = json_line(seen)
        page(seen)
        latest = get(page.port, "/predictions.json")[2].decode()
        html = get(page.port, "/")[2].decode()
    assert source.description == f"http://***@127.0.0.1:{camera.port}/stream.mjpg" and frame.bgr is not None
    for shown in (source.description, frame.name, line, latest, html):
        assert "secret" not in shown
    assert json.loads(line)["source"] == source.description
    leaky = result(name="rtsp://admin:secret@cam/x")  # a Frame built elsewhere: json_line redacts it too
    assert "secret" not in json_line(leaky) and "rtsp://***@cam/x" in json_line(leaky)


# --- the token file and the CLI --------------------------------------------------------------------------------


def test_load_or_create_token(tmp_path):
    path = tmp_path / "config" / "edgetl" / "serve-token"
    token = load_or_create_token(path)
    assert len(token) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_token(path) == token and path.read_text().strip() == token
    path.chmod(0o644)
    with pytest.raises(BadInputError, match="chmod 600"):
        load_or_create_token(path)
    path.chmod(0o600)
    path.write_text("\n")
    with pytest.raises(BadInputError, match="empty"):
        load_or_create_token(path)
    path.write_text("short\n")
    with pytest.raises(BadInputError, match="16\\+"):
        load_or_create_token(path)


def test_serve_token_only_off_loopback_unless_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert serve_token("127.0.0.1") == (None, None) and serve_token("localhost") == (None, None)
    token, path = serve_token("0.0.0.0")
    assert path == tmp_path / "edgetl" / "serve-token" and path.read_text().strip() == token
    explicit = tmp_path / "install" / "serve-token"
    token, path = serve_token("127.0.0.1", explicit)
    assert path == explicit and explicit.read_text().strip() == token


def test_cli_serves_on_loopback_by_default_and_offers_a_token_file():
    help_text = " ".join(run_cli("run", "--help", check=True).stdout.split())  # however click wraps it
    assert "--serve-token-file" in help_text and "[default: 127.0.0.1]" in help_text
    assert "--serve-token " not in help_text  # a token on the command line would show in ps


def test_cli_checks_the_token_file_before_anything_else(tmp_path):
    empty = tmp_path / "serve-token"
    empty.write_text("")
    empty.chmod(0o600)
    bad = run_cli("run", str(tmp_path / "no-model"), "--source", str(tmp_path), "--serve", "0", "--serve-host",
                  "0.0.0.0", "--serve-token-file", str(empty))
    assert bad.returncode == 2 and "is empty" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    made = run_cli("run", str(tmp_path / "no-model"), "--source", str(tmp_path), "--serve", "0", "--serve-host",
                   "0.0.0.0", env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    created = tmp_path / "xdg" / "edgetl" / "serve-token"
    assert created.exists() and stat.S_IMODE(created.stat().st_mode) == 0o600, made.stderr
    assert made.returncode != 0 and "Traceback" not in made.stderr  # then the missing model, one line



def test_below_the_threshold_every_surface_says_unknown():
    """--min-confidence 0.9 and a top-1 of 0.75: the page's JSON says label null / unknown true, the overlay
    draws its first line orange instead of green, and /status.json serves the run's status."""
    from edgetl.runtime.sinks import annotate
    from edgetl.runtime.status import RunStatus
    from edgetl.runtime.stream import StreamStats

    unsure, sure = result(0), result(0)
    unsure.min_confidence, sure.min_confidence = 0.9, 0.5
    assert unsure.label is None and sure.label == "cat"

    def has(colour, image):
        return bool(np.all(image[:60, :200] == colour, axis=-1).any())

    orange, green = (0, 165, 255), (0, 255, 0)
    assert has(orange, annotate(unsure)) and not has(green, annotate(unsure))
    assert has(green, annotate(sure)) and not has(orange, annotate(sure))
    status = RunStatus(StreamStats(), Path(__file__), "synthetic", min_confidence=0.9)
    server = LiveServer(0, status=status)
    try:
        server(unsure)
        code, _, body = get(server.port, "/predictions.json")
        latest = json.loads(body)
        assert code == 200 and latest["label"] is None and latest["unknown"] is True
        code, _, body = get(server.port, "/status.json")
        assert code == 200 and json.loads(body)["min_confidence"] == 0.9 and json.loads(body)["pid"] == os.getpid()
    finally:
        server.close()
