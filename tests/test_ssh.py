"""SSH deploys against a real OpenSSH server on loopback: host keys, lost links, keys, fleets.

Known_hosts files are written by OpenSSH's own tools (`ssh-keygen -H`, `-F`, `-l`), so what
counts as a match or a fingerprint is OpenSSH's answer, not ours.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgetl.errors import BadInputError, CheckFailedError, EdgetlError
from sshd import SFTP_SERVER, SSHD, descendants as _descendants, free_port, signal_all as _signal_all, start_sshd

pytestmark = pytest.mark.skipif(SSHD is None, reason="needs OpenSSH's sshd (.ci/run installs openssh-server)")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def _ssh(server, **overrides):
    from edgetl.deploy.ssh import SshDevice

    options = dict(host="127.0.0.1", port=server.port, username="root", identity=str(server.identity),
                   known_hosts=str(server.known_hosts), python=sys.executable, timeout=10)
    options.update(overrides)
    return SshDevice(**options)


def _host_key(server) -> str:
    """'ssh-ed25519 AAAA...' of the server's host key."""
    return " ".join((server.identity.parent / "host_key.pub").read_text().split()[:2])


def _fingerprint(public_key_file: Path) -> str:
    """SHA256:... as OpenSSH's ssh-keygen prints it."""
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key_file)], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[1]


def _other_key(folder: Path) -> Path:
    """A fresh ed25519 key pair standing in for the device's *old* (or an attacker's) host key."""
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def _hash(known_hosts: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known_hosts)], check=True, capture_output=True)
    assert known_hosts.read_text().startswith("|1|")


def _echo(device) -> str:
    try:
        return device.run(["echo", "ok"], check=True).stdout.strip()
    finally:
        device.close()


# -- 1-4: host keys --------------------------------------------------------------------------------
def test_hashed_known_hosts_with_the_right_key_connects(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {_host_key(sshd)}\n")
    _hash(known)
    assert f"[127.0.0.1]:{sshd.port}" not in known.read_text()
    assert _echo(_ssh(sshd, known_hosts=str(known))) == "ok"


def test_changed_key_in_a_hashed_file_is_refused_even_with_accept_new(sshd, tmp_path):
    old = _other_key(tmp_path / "old")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(old.with_suffix('.pub').read_text().split()[:2])}\n")
    _hash(known)
    before = known.read_bytes()
    with pytest.raises(BadInputError) as info:
        _ssh(sshd, known_hosts=str(known), accept_new_host_key=True)
    message = info.value.message
    assert "CHANGED" in message
    assert _fingerprint(old.with_suffix(".pub")) in message  # what known_hosts has
    assert _fingerprint(sshd.identity.parent / "host_key.pub") in message  # what the device presented
    assert "ssh-keygen -R" in info.value.hint
    assert known.read_bytes() == before


def test_several_names_match_and_a_port_22_entry_does_not_vouch_for_another_port(sshd, tmp_path):
    several = tmp_path / "several"
    several.write_text(f"cam,[127.0.0.1]:{sshd.port},10.9.9.9 {_host_key(sshd)}\n")
    assert _echo(_ssh(sshd, known_hosts=str(several))) == "ok"

    port22 = tmp_path / "port22"
    port22.write_text(f"127.0.0.1 {_host_key(sshd)}\n")  # the right key, for the sshd on port 22 only
    with pytest.raises(BadInputError, match=rf"no entry for \[127\.0\.0\.1\]:{sshd.port}"):
        _ssh(sshd, known_hosts=str(port22))


def test_a_revoked_key_is_refused_whatever_else_trusts_it(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {_host_key(sshd)}\n@revoked * {_host_key(sshd)}\n")
    with pytest.raises(BadInputError, match="not trusted"):
        _ssh(sshd, known_hosts=str(known), accept_new_host_key=True)


def test_the_system_known_hosts_file_vouches_and_its_changed_key_is_refused(sshd, tmp_path, monkeypatch):
    from edgetl.deploy import host_keys

    system = tmp_path / "ssh_known_hosts"  # stands in for /etc/ssh/ssh_known_hosts, as a fleet's config tool writes it
    monkeypatch.setattr(host_keys, "SYSTEM_KNOWN_HOSTS", (system, tmp_path / "absent"))
    user = tmp_path / "known_hosts"  # the user's own file has nothing for this device
    system.write_text(f"[127.0.0.1]:{sshd.port} {_host_key(sshd)}\n")
    _hash(system)
    assert _echo(_ssh(sshd, known_hosts=str(user))) == "ok"
    assert not user.exists()  # trusted through the system file: nothing recorded anywhere

    old = _other_key(tmp_path / "old")
    system.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(old.with_suffix('.pub').read_text().split()[:2])}\n")
    with pytest.raises(BadInputError) as info:
        _ssh(sshd, known_hosts=str(user), accept_new_host_key=True)  # a key the system file contradicts is CHANGED
    assert "CHANGED" in info.value.message and str(system) in info.value.message
    assert _fingerprint(old.with_suffix(".pub")) in info.value.message
    assert f"-f {system}" in info.value.hint and not user.exists()


def test_unknown_key_shows_its_fingerprint_and_is_recorded_only_when_accepted(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("# no newline at the end")
    with pytest.raises(BadInputError, match="not trusted") as info:
        _ssh(sshd, known_hosts=str(known))
    assert _fingerprint(sshd.identity.parent / "host_key.pub") in info.value.message
    assert "--accept-new-host-key" in info.value.hint
    assert known.read_text() == "# no newline at the end"

    assert _echo(_ssh(sshd, known_hosts=str(known), accept_new_host_key=True)) == "ok"
    lines = known.read_text().splitlines()
    assert lines == ["# no newline at the end", f"[127.0.0.1]:{sshd.port} {_host_key(sshd)}"]
    assert _echo(_ssh(sshd, known_hosts=str(known))) == "ok"  # now trusted, no flag needed


def test_a_key_accepted_into_a_hashed_file_is_hashed_and_openssh_finds_it(sshd, tmp_path):
    other = _other_key(tmp_path / "k")
    known = tmp_path / "known_hosts"
    known.write_text(f"elsewhere {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n")
    _hash(known)
    before = known.read_text()
    assert _echo(_ssh(sshd, known_hosts=str(known), accept_new_host_key=True)) == "ok"
    text = known.read_text()
    assert text.startswith(before) and f"[127.0.0.1]:{sshd.port}" not in text
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(known)],
                           capture_output=True, text=True)
    assert found.returncode == 0 and _host_key(sshd) in found.stdout


def test_a_target_parsed_from_settings_reaches_the_device_with_its_python(sshd, tmp_path):
    """Every way to an SSH device (deploy, fleet, pick, rollback) builds it from one SshTarget: --python too."""
    from edgetl.deploy.target import SshTarget, connected

    target = SshTarget.from_settings({"host": "127.0.0.1", "user": "root", "port": sshd.port, "timeout": 10,
                                      "identity": str(sshd.identity), "known_hosts": str(sshd.known_hosts),
                                      "python": "/opt/py/bin/python3", "path": str(tmp_path), "unknown": 1})
    assert target.name == f"root@127.0.0.1:{sshd.port}"
    with connected(target) as device:
        assert device.python == "/opt/py/bin/python3" and device.name == target.name
        assert device.run(["echo", "ok"], check=True).stdout.strip() == "ok"


# -- 5: inventories --------------------------------------------------------------------------------
def _inventory(tmp_path, body: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text("hosts:\n" + body)
    return path


def test_inventory_booleans_ports_and_timeouts_are_parsed_strictly(tmp_path):
    from edgetl.deploy.fleet import read_inventory

    hosts = read_inventory(_inventory(tmp_path, '  - {host: a, accept_new_host_key: "false"}\n'
                                                '  - {host: b, accept_new_host_key: "yes"}\n'
                                                '  - {host: c, accept_new_host_key: no, port: "2222", timeout: 2.5}\n'
                                                '  - {host: d}\n'))
    assert [h.get("accept_new_host_key") for h in hosts] == [False, True, False, None]
    assert hosts[2]["port"] == 2222 and hosts[2]["timeout"] == 2.5
    timed = read_inventory(_inventory(tmp_path, '  - {host: a, stall_timeout: "5", host_timeout: 900}\n'))
    assert timed[0]["stall_timeout"] == 5.0 and timed[0]["host_timeout"] == 900.0
    for body, field in [('  - {host: a}\n  - {host: b, accept_new_host_key: "maybe"}\n',
                         "hosts[1].accept_new_host_key"),
                        ("  - {host: a, port: 70000}\n", "hosts[0].port"),
                        ("  - {host: a, port: ssh}\n", "hosts[0].port"),
                        ("  - {host: a, port: true}\n", "hosts[0].port"),
                        ("  - {host: a, timeout: -1}\n", "hosts[0].timeout"),
                        ("  - {host: a, timeout: soon}\n", "hosts[0].timeout")]:
        with pytest.raises(BadInputError, match=field.replace("[", r"\[").replace("]", r"\]")):
            read_inventory(_inventory(tmp_path, body))


# -- 6: nothing hangs, every failure is one line ----------------------------------------------------
def test_a_command_that_outlives_its_timeout_fails_and_is_killed(sshd):
    device = _ssh(sshd)
    try:
        started = time.monotonic()
        with pytest.raises(CheckFailedError, match="timed out after 1 s"):
            device.run(["sleep", "37.4242"], timeout=1)
        assert time.monotonic() - started < 30
        deadline = time.monotonic() + 20  # the remote sleep is signalled, not left running
        while subprocess.run(["pgrep", "-f", "sleep 37.4242"], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "the timed-out command still runs on the device"
            time.sleep(0.2)
        assert device.run(["echo", "still usable"], check=True).stdout.strip() == "still usable"
    finally:
        device.close()


@pytest.mark.parametrize("how", ["sshd killed", pytest.param("device frozen", marks=pytest.mark.slow)])
def test_a_device_lost_mid_command_fails_within_a_bound(tmp_path, how):
    """Killed: the TCP connection resets. Frozen (SIGSTOP, as a device off the network): TCP stays
    open and silent, and only the keepalives can tell."""
    server = start_sshd(tmp_path / "sshd")
    device = None
    try:
        device = _ssh(server)
        assert device.run(["echo", "ok"], check=True).stdout.strip() == "ok"
        if how == "sshd killed":
            def drop():
                _signal_all([server.process.pid, *_descendants(server.process.pid)], signal.SIGKILL)
        else:
            def drop():
                _signal_all(_descendants(server.process.pid), signal.SIGSTOP)
        threading.Timer(1.0, drop).start()
        started = time.monotonic()
        with pytest.raises(EdgetlError, match="connection to root@127.0.0.1:.* lost during `sleep 60`"):
            device.run(["sleep", "60"])
        assert time.monotonic() - started < 55
        with pytest.raises(CheckFailedError, match="lost"):  # and so does every later step, at once
            device.run(["echo", "ok"])
    finally:
        if device is not None:
            device.close()
        stuck = _descendants(server.process.pid)
        _signal_all(stuck, signal.SIGKILL)
        _signal_all(stuck, signal.SIGCONT)
        server.process.kill()
        server.process.wait(timeout=10)


def stalling_sshd(folder: Path):
    """An sshd whose sftp-server is frozen (SIGSTOP) 0.3 s after it starts: a hung SD card or a hostile
    device. sshd stays alive and answers keepalives; only the transfer stops."""
    folder.mkdir(parents=True)
    wrapper = folder / "stalling-sftp-server"
    wrapper.write_text(f"#!/bin/sh\n(sleep 0.3; kill -STOP $$) &\nexec {SFTP_SERVER}\n")
    wrapper.chmod(0o755)
    return start_sshd(folder / "server", sftp=str(wrapper))


def _stop_frozen(server) -> None:
    stuck = _descendants(server.process.pid)
    _signal_all(stuck, signal.SIGKILL)
    _signal_all(stuck, signal.SIGCONT)
    server.process.kill()
    server.process.wait(timeout=10)


@pytest.mark.skipif(SFTP_SERVER is None, reason="needs OpenSSH's sftp-server")
def test_a_stalled_sftp_server_fails_its_host_and_the_fleet_finishes(sshd, tmp_path):
    from edgetl.deploy.fleet import deploy_fleet, read_inventory
    from edgetl.deploy.target import ssh_targets

    stalled = stalling_sshd(tmp_path / "stalled")
    try:
        inventory = _inventory(tmp_path, "".join(
            f"  - {{host: 127.0.0.1, port: {server.port}, known_hosts: {server.known_hosts}, identity: "
            f"{server.identity}, user: root, timeout: 5, stall_timeout: 2, path: {tmp_path / name}}}\n"
            for server, name in ((sshd, "d0"), (stalled, "d1"), (sshd, "d2"))))
        started = time.monotonic()
        rows = deploy_fleet(_failing_bundle(tmp_path / "bundle"), ssh_targets(read_inventory(inventory),
                                                                               {"python": sys.executable}))
        assert time.monotonic() - started < 60  # a liveness bound: without the watchdog it never returns
        assert [r["ok"] for r in rows] == [False] * 3
        assert "checksum mismatch" in rows[0]["error"] and "checksum mismatch" in rows[2]["error"]  # they finished
        assert rows[1]["host"] == f"root@127.0.0.1:{stalled.port}"
        assert "stalled: no progress for 2 s" in rows[1]["error"] and "--stall-timeout" in rows[1]["hint"], rows[1]
    finally:
        _stop_frozen(stalled)


@pytest.mark.skipif(SFTP_SERVER is None, reason="needs OpenSSH's sftp-server")
def test_an_upload_into_a_frozen_sftp_server_fails_and_closing_does_not_hang(tmp_path):
    stalled = stalling_sshd(tmp_path / "stalled")
    try:
        device = _ssh(stalled, stall_timeout=1)
        time.sleep(0.6)  # the sftp-server is frozen now; sshd and the shell still answer
        started = time.monotonic()
        with pytest.raises(CheckFailedError, match=r"upload of \S+ to .* stalled: no progress for 1 s"):
            device.upload(_failing_bundle(tmp_path / "bundle"), str(tmp_path / "up"))
        device.close()
        assert time.monotonic() - started < 30
    finally:
        _stop_frozen(stalled)


def test_every_step_ends_by_the_hosts_deadline(sshd):
    device = _ssh(sshd, host_timeout=3)
    try:
        started = time.monotonic()
        with pytest.raises(CheckFailedError, match=r"ran past its 3 s deadline \(during `sleep 30`\)") as info:
            device.run(["sleep", "30"])  # its own timeout (300 s) is far away; the host's deadline is not
        assert time.monotonic() - started < 20 and "--host-timeout" in info.value.hint
        with pytest.raises(CheckFailedError, match="deadline"):  # and every later step, at once
            device.run(["echo", "late"])
    finally:
        device.close()


@pytest.fixture(scope="module")
def encrypted_key(sshd, tmp_path_factory) -> Path:
    """A passphrase-protected key the device *does* accept, so only the passphrase stands in the way."""
    key = tmp_path_factory.mktemp("enc") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(key)], check=True)
    authorized = sshd.identity.parent / "authorized_keys"
    authorized.write_text(authorized.read_text() + key.with_suffix(".pub").read_text())
    return key


def test_a_passphrase_protected_key_says_so(sshd, encrypted_key, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(BadInputError, match="passphrase-protected") as info:
        _ssh(sshd, identity=str(encrypted_key))
    assert info.value.message == f"the key {encrypted_key} is passphrase-protected"
    assert f"ssh-add {encrypted_key}" in info.value.hint


def test_a_passphrase_protected_key_works_through_ssh_agent(sshd, encrypted_key, tmp_path, monkeypatch):
    """What the hint tells the user to do works; an agent without the key still gets the clear error."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline and agent.poll() is None, "ssh-agent did not start"
            time.sleep(0.05)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        with pytest.raises(BadInputError, match="passphrase-protected"):  # the agent is empty
            _ssh(sshd, identity=str(encrypted_key))
        askpass = tmp_path / "askpass"
        askpass.write_text("#!/bin/sh\necho secret\n")
        askpass.chmod(0o700)
        subprocess.run(["ssh-add", str(encrypted_key)], check=True, capture_output=True, stdin=subprocess.DEVNULL,
                       env={**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force",
                            "DISPLAY": ":0"})
        assert _echo(_ssh(sshd, identity=str(encrypted_key))) == "ok"
    finally:
        agent.kill()
        agent.wait(timeout=10)


def _failing_bundle(folder: Path, release: str = "20260301-000000-x") -> Path:
    """The smallest folder install_release uploads, and whose checksum step then fails on the device."""
    from edgetl.deploy.bundle import CHECKSUMS, MANIFEST

    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(json.dumps({"bundle": release, "profile": {"python": "3.11"}}))
    (folder / CHECKSUMS).write_text(f"{'0' * 64}  {MANIFEST}\n")
    return folder


def test_fleet_every_failure_is_that_hosts_row(sshd, encrypted_key, tmp_path, monkeypatch):
    from edgetl.deploy.fleet import deploy_fleet, read_inventory
    from edgetl.deploy.local import current_release
    from edgetl.deploy.target import ssh_targets

    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    dead = free_port()
    common = f"user: root, known_hosts: {sshd.known_hosts}, timeout: 5"
    inventory = _inventory(tmp_path, "".join([
        f"  - {{host: 127.0.0.1, port: {sshd.port}, identity: {sshd.identity}, {common}, path: {tmp_path / 'd0'}}}\n",
        f"  - {{host: 127.0.0.1, port: {dead}, identity: {sshd.identity}, {common}, path: {tmp_path / 'd1'}}}\n",
        f"  - {{host: 127.0.0.1, port: {sshd.port}, identity: {encrypted_key}, {common}, path: {tmp_path / 'd2'}}}\n",
        f'  - {{host: 127.0.0.1, port: {sshd.port}, identity: {sshd.identity}, user: root, known_hosts: {empty},'
        f' accept_new_host_key: "false", path: {tmp_path / "d3"}}}\n',
    ]))
    hosts = read_inventory(inventory)
    rows = deploy_fleet(_failing_bundle(tmp_path / "bundle"), ssh_targets(hosts, {"python": sys.executable}))
    assert [r["ok"] for r in rows] == [False] * 4, rows
    assert "checksum mismatch" in rows[0]["error"] and rows[0]["host"] == f"root@127.0.0.1:{sshd.port}"
    assert "cannot reach" in rows[1]["error"] and rows[1]["host"] == f"root@127.0.0.1:{dead}"
    assert "passphrase-protected" in rows[2]["error"]
    assert "not trusted" in rows[3]["error"] and empty.read_text() == ""  # "false" did not accept the key
    assert all("\n" not in r["error"] for r in rows)
    assert current_release(tmp_path / "d0") is None and not list((tmp_path / "d0" / "releases").iterdir())

    # Not only edgetl's own errors: a disk-full OSError in one host's steps is that host's row too. (The
    # fault is injected into the install step; the SSH connections stay real.)
    from edgetl.deploy import local

    real = local.install_release

    def full_disk_on_d0(bundle, path, device=None, **kwargs):
        if str(path).endswith("d0"):
            raise OSError(28, "No space left on device")
        return real(bundle, path, device=device, **kwargs)

    monkeypatch.setattr(local, "install_release", full_disk_on_d0)
    again = _inventory(tmp_path, "".join(
        f"  - {{host: 127.0.0.1, port: {sshd.port}, identity: {sshd.identity}, {common}, path: {tmp_path / d}}}\n"
        for d in ("d0", "d4")))
    rows = deploy_fleet(_failing_bundle(tmp_path / "bundle2"), ssh_targets(read_inventory(again),
                                                                           {"python": sys.executable}))
    assert rows[0] == {"ok": False, "host": f"root@127.0.0.1:{sshd.port}", "port": sshd.port,
                       "error": "OSError: [Errno 28] No space left on device", "hint": None, "exit_code": 1}, rows
    assert not rows[1]["ok"] and "checksum mismatch" in rows[1]["error"], rows
