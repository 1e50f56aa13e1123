"""`edgetl run --mqtt` against a real Mosquitto broker on loopback, counted with the real mosquitto_sub.

Skipped without Debian's `mosquitto` and `mosquitto-clients` (.ci/run installs them). The broker keeps
its sessions on disk (persistence), as a production broker does, so a restart loses nothing the broker
had acknowledged: whatever a subscriber misses is what edgetl says it dropped.
"""

from __future__ import annotations

import getpass
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import artifact, run_cli

pytestmark = pytest.mark.skipif(not (shutil.which("mosquitto") and shutil.which("mosquitto_sub")),
                                reason="needs Mosquitto (apt install mosquitto mosquitto-clients)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    """A Mosquitto on 127.0.0.1 with on-disk persistence; `restart()` stops it (SIGTERM) and starts it again."""

    def __init__(self, folder: Path, listener: str = "allow_anonymous true\n"):
        self.folder, self.port = folder, _free_port()
        (folder / "db").mkdir(parents=True)
        self.config = folder / "mosquitto.conf"
        # `user`: as root, mosquitto would otherwise drop to the `mosquitto` user and fail to save its database.
        self.config.write_text(f"listener {self.port} 127.0.0.1\n{listener}persistence true\n"
                               f"persistence_location {folder / 'db'}/\nuser {getpass.getuser()}\n")
        self.process = None
        self.start()

    def start(self) -> None:
        log = open(self.folder / "broker.log", "a")
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.time() + 10
        while time.time() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"mosquitto did not listen: {(self.folder / 'broker.log').read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)

    def restart(self, down_s: float) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


@pytest.fixture
def broker(tmp_path):
    running = Broker(tmp_path / "broker")
    yield running
    if running.process.poll() is None:
        running.stop()


def _subscribe(broker: Broker, topic: str, out: Path) -> subprocess.Popen:
    """mosquitto_sub with a persistent QoS 1 session: it reconnects by itself after a broker restart."""
    handle = open(out, "w")
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", topic, "-q", "1",
                            "-c", "-i", f"edgetl-test-{broker.port}"], stdout=handle, stderr=subprocess.STDOUT)
    time.sleep(0.5)  # subscribed before the first message
    return sub


def _messages(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _video(path: Path, frames: int, size: int = 64) -> Path:
    """Real photographs (scikit-image) in turn, 30 frames each: some sure answers, some not."""
    import cv2
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.camera()]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (size, size))
    for index in range(frames):
        photo = photos[(index // 30) % len(photos)]
        photo = cv2.cvtColor(photo, cv2.COLOR_GRAY2BGR) if photo.ndim == 2 else photo[:, :, ::-1]
        writer.write(cv2.resize(photo, (size, size)))
    writer.release()
    return path


def _wait_for_lines(path: Path, count: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and path.read_text().count("\n") < count:
        time.sleep(0.02)


def test_one_message_per_frame_with_unknown_below_the_threshold(exported, broker, tmp_path):
    """The issue's command: every frame arrives once, in order, as the JSON line's object, and `unknown`
    (label null) exactly where the top-1 probability is below --min-confidence."""
    model = artifact(exported, "onnx", "fp32")["path"]
    video = _video(tmp_path / "clip.avi", 150)
    received = tmp_path / "sub.txt"
    sub = _subscribe(broker, "edgetl/cam1", received)
    try:
        result = run_cli("run", model, "--source", str(video), "--mqtt", f"mqtt://127.0.0.1:{broker.port}/edgetl/cam1",
                         "--min-confidence", "0.6", "--json-lines", check=True)
        _wait_for_lines(received, 150, timeout=10)
    finally:
        sub.terminate()
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    summary, frames = lines[-1]["summary"], lines[:-1]
    messages = _messages(received)
    assert [m["frame"] for m in messages] == list(range(150)) == [f["frame"] for f in frames]
    assert messages == frames  # the same object on stdout and on the broker
    for message in messages:
        top_label, top_score = message["topk"][0]
        assert message["unknown"] == (top_score < 0.6)
        assert message["label"] == (None if top_score < 0.6 else top_label)
    unknown = sum(m["unknown"] for m in messages)
    assert summary["unknown"] == unknown and summary["min_confidence"] == 0.6
    assert summary["mqtt"]["published"] == 150 and summary["mqtt"]["dropped"] == 0


@pytest.mark.slow
def test_a_broker_restart_mid_stream_loses_only_what_was_counted_as_dropped(exported, broker, tmp_path):
    """The broker goes away for 1.5 s while a long video is classified: the run classifies every frame,
    reconnects, and every frame is either delivered (once or more, first copies in order) or counted
    as dropped by the bounded queue (--mqtt-queue 20). Nothing else is lost."""
    model = artifact(exported, "onnx", "fp32")["path"]
    total = 3000
    video = _video(tmp_path / "long.avi", total)
    received = tmp_path / "sub.txt"
    sub = _subscribe(broker, "edgetl/cam1", received)
    run = subprocess.Popen([sys.executable, "-m", "edgetl", "run", model, "--source", str(video), "--mqtt",
                            f"mqtt://127.0.0.1:{broker.port}/edgetl/cam1", "--mqtt-queue", "20", "--json-lines", "-q"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_lines(received, 200)
        broker.restart(down_s=1.5)
        stdout, stderr = run.communicate(timeout=180)
        time.sleep(1.0)  # the subscriber's last deliveries
    finally:
        run.kill()
        sub.terminate()
    assert run.returncode == 0, stderr[-2000:]
    summary = json.loads(stdout.splitlines()[-1])["summary"]
    assert summary["frames"] == total  # the camera loop never stopped
    assert "lost the MQTT broker" in stderr  # the restart happened while the run was publishing
    sent = summary["mqtt"]
    assert sent["published"] + sent["dropped"] == total and sent["queued"] == 0
    first_copies = list(dict.fromkeys(m["frame"] for m in _messages(received)))  # QoS 1 may deliver twice
    assert first_copies == sorted(first_copies)
    assert first_copies[-1] == total - 1
    assert len(first_copies) == sent["published"] == total - sent["dropped"]


def test_bad_mqtt_settings_are_one_line_before_anything_runs(exported, tmp_path):
    model = artifact(exported, "onnx", "fp32")["path"]
    cases = {"mqtt://user:secret@127.0.0.1/edgetl/x": "must not carry credentials",
             "mqtt://127.0.0.1:1883/": "needs one topic",
             "mqtt://127.0.0.1/edgetl/#": "no wildcards",
             "http://127.0.0.1/edgetl": "not an mqtt:// or mqtts:// URL"}
    for url, message in cases.items():
        result = run_cli("run", model, "--source", str(tmp_path), "--mqtt", url)
        assert result.returncode == 2 and message in result.stderr, (url, result.stderr)
        assert "secret" not in result.stderr and "Traceback" not in result.stderr
    auth = tmp_path / "auth"
    auth.write_text("username=cam\npassword=hunter2\n")
    auth.chmod(0o644)
    result = run_cli("run", model, "--source", str(tmp_path), "--mqtt", "mqtt://127.0.0.1/e", "--mqtt-auth", str(auth))
    assert result.returncode == 2 and "readable by other users" in result.stderr


def test_credentials_come_from_the_environment_or_a_private_file(tmp_path):
    from edgetl.errors import BadInputError
    from edgetl.runtime.mqtt import read_credentials

    assert read_credentials(None, {"EDGETL_MQTT_USERNAME": "cam", "EDGETL_MQTT_PASSWORD": "pw"}) == ("cam", "pw")
    assert read_credentials(None, {}) is None
    auth = tmp_path / "auth"
    auth.write_text("username=cam\npassword=pw=with=equals\n")
    auth.chmod(0o600)
    assert read_credentials(str(auth), {}) == ("cam", "pw=with=equals")
    auth.write_text("password=pw\n")
    with pytest.raises(BadInputError, match="no username"):
        read_credentials(str(auth), {})


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (OpenSSL)."""
    folder.mkdir(parents=True)
    ca, server = folder / "ca", folder / "server"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    subprocess.run(["openssl", "req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-subj",
                    "/CN=edgetl test CA", "-days", "2"], check=True, capture_output=True)
    subprocess.run(["openssl", "req", *ec, "-keyout", f"{server}.key", "-out", f"{server}.csr", "-subj",
                    "/CN=127.0.0.1"], check=True, capture_output=True)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    subprocess.run(["openssl", "x509", "-req", "-in", f"{server}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                    "-CAcreateserial", "-out", f"{server}.pem", "-days", "2", "-extfile", str(folder / "san.ext")],
                   check=True, capture_output=True)
    return Path(f"{ca}.pem"), Path(f"{server}.pem"), Path(f"{server}.key")


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="needs mosquitto_passwd")
def test_mqtts_with_a_password_from_the_environment(exported, tmp_path):
    """A TLS listener that wants a user: the password comes from the environment (never argv), the broker's
    certificate is checked against --mqtt-ca; with the system's CAs instead the run still classifies every
    frame, says it cannot reach the broker and that its results were not delivered."""
    ca, cert, key = _certificates(tmp_path / "tls")
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "cam", "s3cret"], check=True)
    listener = (f"allow_anonymous false\npassword_file {passwords}\ncafile {ca}\ncertfile {cert}\n"
                f"keyfile {key}\n")
    broker = Broker(tmp_path / "broker", listener)
    model = artifact(exported, "onnx", "fp32")["path"]
    video = _video(tmp_path / "clip.avi", 20)
    received = tmp_path / "sub.txt"
    handle = open(received, "w")
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", "edgetl/tls", "-q",
                            "1", "--cafile", str(ca), "-u", "cam", "-P", "s3cret"], stdout=handle,
                           stderr=subprocess.STDOUT)
    time.sleep(0.5)
    env = {"EDGETL_MQTT_USERNAME": "cam", "EDGETL_MQTT_PASSWORD": "s3cret"}
    url = f"mqtts://127.0.0.1:{broker.port}/edgetl/tls"
    try:
        good = run_cli("run", model, "--source", str(video), "--mqtt", url, "--mqtt-ca", str(ca), "--json-lines",
                       env=env, check=True)
        _wait_for_lines(received, 20, timeout=10)
        untrusted = run_cli("run", model, "--source", str(video), "--mqtt", url, "--json-lines", env=env)
    finally:
        sub.terminate()
        broker.stop()
    assert [m["frame"] for m in _messages(received)] == list(range(20))
    assert json.loads(good.stdout.splitlines()[-1])["summary"]["mqtt"]["published"] == 20
    summary = json.loads(untrusted.stdout.splitlines()[-1])["summary"]
    assert untrusted.returncode == 0 and summary["frames"] == 20
    assert summary["mqtt"]["published"] == 0 and summary["mqtt"]["queued"] == 20
    assert "cannot reach the MQTT broker" in untrusted.stderr and "20 results were not delivered" in untrusted.stderr
    assert "s3cret" not in good.stderr + untrusted.stderr
