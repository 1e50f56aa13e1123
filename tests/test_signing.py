"""The bundle signing key: made private, named the way the device's OpenSSL names it, never loosely kept."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import run_cli
from edgetl.errors import BadInputError


@pytest.fixture
def config(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EDGETL_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "config"


def test_keys_init_makes_a_private_key_and_keeps_it(config):
    made = run_cli("keys", "init", "--json", env={"EDGETL_CONFIG_DIR": str(config)}, check=True)
    first = json.loads(made.stdout)
    assert first["created"] is True and len(first["key_id"]) == 16
    private = config / "signing" / "ed25519.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700
    assert "PRIVATE" not in made.stdout + made.stderr  # the private key is never printed
    again = json.loads(run_cli("keys", "init", "--json", env={"EDGETL_CONFIG_DIR": str(config)}, check=True).stdout)
    assert again["created"] is False and again["key_id"] == first["key_id"]
    shown = run_cli("keys", "show", env={"EDGETL_CONFIG_DIR": str(config)}, check=True)
    assert f"trusted-keys/{first['key_id']}.pem" in shown.stderr and "BEGIN PUBLIC KEY" in shown.stderr


def test_the_key_id_is_what_the_devices_openssl_computes(config):
    from edgetl.deploy.signing import init_key, key_folder

    result = init_key()
    pipeline = (f"openssl pkey -pubin -in {key_folder() / 'ed25519.pub.pem'} -outform DER | tail -c 32 | sha256sum "
                "| cut -c1-16")  # install.sh's own computation
    assert subprocess.run(["sh", "-c", pipeline], capture_output=True, text=True,
                          check=True).stdout.strip() == result["key_id"]


def test_a_signature_verifies_only_for_the_signed_bytes_and_key(config, tmp_path):
    from edgetl.deploy.signing import init_key, sign_bundle, verify_bundle_signature

    public = init_key()["public_pem"].encode()
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "SHA256SUMS").write_text(f"{'a' * 64}  model/model.onnx\n")
    sign_bundle(bundle)
    assert verify_bundle_signature(bundle, public)
    (bundle / "SHA256SUMS").write_text(f"{'b' * 64}  model/model.onnx\n")
    assert not verify_bundle_signature(bundle, public)


def test_a_signing_key_others_can_read_is_refused(config, tmp_path):
    from edgetl.deploy.signing import init_key, key_folder, sign_bundle

    init_key()
    (key_folder() / "ed25519.pem").chmod(0o644)
    (tmp_path / "SHA256SUMS").write_text("x\n")
    with pytest.raises(BadInputError, match="readable by other users"):
        sign_bundle(tmp_path)
    assert not (tmp_path / "SHA256SUMS.sig").exists()


def test_a_public_key_that_is_not_ed25519_pem_is_one_line(config):
    from edgetl.deploy.signing import key_id

    with pytest.raises(BadInputError, match="not an Ed25519 public key"):
        key_id("-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n")
