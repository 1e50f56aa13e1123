"""The running classifier's status: the heartbeat file and /status.json while `edgetl run` classifies a
video (valid JSON at every read: written atomically), and `edgetl status` reading it on this machine and
over real SSH on loopback, for a device and an inventory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import artifact, run_cli
from sshd import SSHD, free_port, start_sshd
from test_mqtt import _video

RELEASE = "20261207-120000-abcdef12-0001"


def _root(tmp_path: Path, exported, heartbeat: Path) -> Path:
    """A release root as a deploy leaves it (releases/ID/model, its manifest, `current`), with the model the
    service runs and a profile whose health.heartbeat is `heartbeat`."""
    root = tmp_path / "root"
    release = root / "releases" / RELEASE
    shutil.copytree(artifact(exported, "onnx", "fp32")["path"], release / "model")
    (release / "manifest.json").write_text(json.dumps({"bundle": RELEASE, "profile": {
        "name": "linux-x86", "health": {"heartbeat": str(heartbeat)}}}))
    (root / "current").symlink_to(f"releases/{RELEASE}")
    return root


def _start_run(model: Path, video: Path, heartbeat: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgetl", "run", str(model), "--source", str(video),
                             "--heartbeat", str(heartbeat), "--serve", str(port), "--min-confidence", "0.5", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_heartbeat_and_status_json_are_whole_at_every_read_and_edgetl_status_reads_them(exported, tmp_path):
    beat_file = tmp_path / "state" / "heartbeat.json"
    root = _root(tmp_path, exported, beat_file)
    port = free_port()
    run = _start_run(root / "current" / "model", _video(tmp_path / "clip.avi", 2500), beat_file, port)
    reads = served = 0
    try:
        deadline = time.time() + 60
        while not beat_file.exists() and time.time() < deadline:
            time.sleep(0.01)
        for _ in range(300):  # the file is replaced about once a second: a torn write would show here
            beat = json.loads(beat_file.read_text())
            reads += 1
            if reads % 30 == 0:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=5) as answer:
                    page = json.loads(answer.read())
                served += 1
                assert page["pid"] == beat["pid"] == run.pid and page["release"] == RELEASE
            time.sleep(0.005)
        assert run.poll() is None, "the run should still be classifying"
        shown = run_cli("status", "--local", str(root), "--json")
    finally:
        run.terminate()
        run.wait(timeout=30)
    assert reads == 300 and served == 10
    assert beat["model"] == str((root / "releases" / RELEASE / "model").resolve())
    assert beat["frames"] > 0 and beat["infer_ms"]["p50"] > 0 and beat["min_confidence"] == 0.5
    assert shown.returncode == 0, shown.stderr
    row = json.loads(shown.stdout)["devices"][0]
    assert row["state"] == "running" and row["current"] == RELEASE and row["beat"]["frames"] > 0


def test_status_says_stale_other_release_and_no_heartbeat(exported, tmp_path):
    beat_file = tmp_path / "heartbeat.json"
    root = _root(tmp_path, exported, beat_file)
    result = run_cli("status", "--local", str(root), "--json")
    assert result.returncode == 1 and json.loads(result.stdout)["devices"][0]["state"] == "no heartbeat"
    beat = {"pid": 1, "model": "m", "release": RELEASE, "frames": 9, "time": time.time() - 60}
    beat_file.write_text(json.dumps(beat))
    assert json.loads(run_cli("status", "--local", str(root), "--json").stdout)["devices"][0]["state"] == "stale"
    beat_file.write_text(json.dumps({**beat, "release": "20250101-000000-00000000-0000", "time": time.time()}))
    assert json.loads(run_cli("status", "--local", str(root), "--json").stdout)["devices"][0]["state"] == \
        "other release"


def test_a_crafted_heartbeat_cannot_fake_rows_or_flood_the_terminal():
    from edgetl.deploy.status import clean_heartbeat

    crafted = json.dumps({"release": "x\n| fake | row |\x1b[2J", "frames": "many", "fps": 1e309,
                          "last_error": {"message": "a" * 5000}, "mqtt": {"broker": ["not text"], "published": True}})
    beat = clean_heartbeat(crafted)
    assert beat["release"] == "x" and beat["frames"] is None and len(beat["last_error"]) == 300
    assert beat["mqtt"]["broker"] is None and beat["mqtt"]["published"] is None
    assert clean_heartbeat("[1, 2]") is None and clean_heartbeat("{torn") is None
    assert clean_heartbeat("{}" + " " * 70000) is None


@pytest.mark.skipif(SSHD is None, reason="needs OpenSSH's sshd (apt install openssh-server)")
def test_status_of_a_fleet_over_ssh_names_the_unreachable_device(exported, tmp_path):
    beat_file = tmp_path / "heartbeat.json"
    root = _root(tmp_path, exported, beat_file)
    beat_file.write_text(json.dumps({"pid": 1, "model": "m", "release": RELEASE, "frames": 42, "fps": 30.0,
                                     "infer_ms": {"p50": 4.2, "p99": 9.1}, "time": time.time()}))
    server = start_sshd(tmp_path / "sshd")
    try:
        inventory = tmp_path / "fleet.yaml"
        inventory.write_text(f"hosts:\n  - host: 127.0.0.1\n    user: root\n    port: {server.port}\n"
                             f"  - host: 127.0.0.1\n    user: root\n    port: {free_port()}\n")
        result = run_cli("status", "--hosts", str(inventory), "--path", str(root), "--identity", str(server.identity),
                         "--known-hosts", str(server.known_hosts), "--timeout", "5", "--json")
    finally:
        server.stop()
    rows = json.loads(result.stdout)["devices"]
    assert result.returncode == 1 and "1 of 2 device(s) not running" in result.stderr
    assert rows[0]["state"] == "running" and rows[0]["beat"]["frames"] == 42 and rows[0]["current"] == RELEASE
    assert rows[1]["state"] == "unreachable" and rows[1]["error"]


def test_a_heartbeat_that_cannot_be_written_is_one_line(exported, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    photos = tmp_path / "photos"
    photos.mkdir()
    from skimage import data
    from PIL import Image

    Image.fromarray(data.chelsea()).save(photos / "cat.jpg")
    result = run_cli("run", artifact(exported, "onnx", "fp32")["path"], "--source", str(photos), "--heartbeat",
                     str(blocker / "heartbeat.json"))
    assert result.returncode == 2 and "cannot write the heartbeat" in result.stderr
    assert "Traceback" not in result.stderr
