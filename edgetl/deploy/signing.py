"""Signed bundles: who built a bundle, not only whether its bytes arrived intact.

A bundle's `SHA256SUMS` lists the sha256 of every file in it (manifest.json included). The deployer
signs that file with its Ed25519 key; the bundle carries the raw 64-byte signature
(`SHA256SUMS.sig`) and the signer's public key (`signer.pub.pem`); a key's id is 16 hex digits of the
sha256 of its raw 32 bytes. A device root trusts the public keys in `ROOT/trusted-keys/<id>.pem`; the
bundle's copy of the signer's key only says which trusted key to check against. `install.sh`
checks the signature with the device's own OpenSSL (`openssl pkeyutl -verify -rawin`, OpenSSL 3)
before `sha256sum -c` and before anything from the bundle runs, so a bundle whose files were changed
and whose checksums were recomputed is refused: the signature no longer matches.

The key lives in `$EDGETL_CONFIG_DIR` (default `~/.config/edgetl`) under `signing/`: the private key
mode 0600 in a 0700 folder, created by `edgetl keys init` or by the first deploy that needs it; it is
never logged and never shipped. Cryptography is the `cryptography` package's Ed25519 (asyncssh needs
it already), never hand-written.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from edgetl import atomic
from edgetl.errors import BadInputError, require

SIGNATURE, SIGNER = "SHA256SUMS.sig", "signer.pub.pem"
TRUSTED_KEYS = "trusted-keys"  # a folder under the device's install root
PRIVATE_NAME, PUBLIC_NAME = "ed25519.pem", "ed25519.pub.pem"


def config_dir() -> Path:
    return Path(os.environ.get("EDGETL_CONFIG_DIR") or Path.home() / ".config" / "edgetl").expanduser()


def key_folder() -> Path:
    return config_dir() / "signing"


def _serialization():
    require("cryptography", "deploy", "signing bundles")
    from cryptography.hazmat.primitives import serialization

    return serialization


ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")  # DER SubjectPublicKeyInfo, Ed25519


def key_id(public_pem: bytes | str) -> str:
    """16 hex digits naming an Ed25519 public key (PEM): the sha256 of its raw 32 bytes, as install.sh
    computes it with `openssl pkey -outform DER | tail -c 32 | sha256sum`. No cryptography needed."""
    text = public_pem.decode("ascii", "replace") if isinstance(public_pem, bytes) else public_pem
    body = "".join(line for line in text.strip().splitlines() if not line.startswith("-----"))
    try:
        der = base64.b64decode(body, validate=True)
    except ValueError:
        der = b""
    if len(der) != 44 or not der.startswith(ED25519_SPKI_PREFIX):
        raise BadInputError("not an Ed25519 public key in PEM form", "give the .pub.pem `edgetl keys show` prints")
    return hashlib.sha256(der[-32:]).hexdigest()[:16]


def init_key(force: bool = False) -> dict:
    """Create the signing key pair (0600 private key in a 0700 folder); an existing one is kept unless
    `force` (which makes every device that trusts the old key refuse new bundles: say so)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    serialization = _serialization()
    folder = key_folder()
    private_path = folder / PRIVATE_NAME
    if private_path.is_file() and not force:
        return {**public_key(), "created": False}
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    atomic.write_bytes(private_path, private, mode=0o600)
    atomic.write_bytes(folder / PUBLIC_NAME, public)
    return {**public_key(), "created": True}


def public_key() -> dict:
    """This user's signing public key (created first when there is none): id, PEM, path."""
    path = key_folder() / PUBLIC_NAME
    if not (key_folder() / PRIVATE_NAME).is_file():
        init_key()
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"no signing key at {key_folder()}", "create one with `edgetl keys init`") from exc
    return {"key_id": key_id(pem), "public_pem": pem.decode(), "path": str(path)}


def _private_key():
    serialization = _serialization()
    path = key_folder() / PRIVATE_NAME
    if not path.is_file():
        init_key()
    if path.stat().st_mode & 0o077:
        raise BadInputError(f"the signing key {path} is readable by other users",
                            f"chmod 600 {path} (and check who may have read it)")
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise BadInputError(f"the signing key {path} cannot be read", "restore it, or `edgetl keys init --force` "
                            "(devices that trust the old key then refuse new bundles)") from exc


def sign_bundle(folder: Path) -> None:
    """Sign folder/SHA256SUMS (the signature lands beside it)."""
    (folder / SIGNATURE).write_bytes(_private_key().sign((folder / "SHA256SUMS").read_bytes()))


def can_verify() -> bool:
    """Whether this Python has `cryptography` (a device's release environment may not; install.sh uses
    the device's OpenSSL there)."""
    import importlib.util

    return importlib.util.find_spec("cryptography") is not None


def verify_bundle_signature(folder: Path, public_pem: bytes) -> bool:
    """True when folder/SHA256SUMS.sig is `public_pem`'s signature of folder/SHA256SUMS."""
    from cryptography.exceptions import InvalidSignature

    public = _serialization().load_pem_public_key(public_pem)
    try:
        public.verify((folder / SIGNATURE).read_bytes(), (folder / "SHA256SUMS").read_bytes())
    except (InvalidSignature, OSError):
        return False
    return True


def trusted_key_path(root: str, public_pem: str) -> str:
    """Where a device root keeps a trusted public key."""
    return f"{root}/{TRUSTED_KEYS}/{key_id(public_pem)}.pem"


def bundle_signer(bundle: Path) -> str | None:
    """The public key (PEM) a bundle says it was signed with; None for an unsigned bundle. Only the
    deployer that just built and signed the bundle passes this on as the key a new device should trust."""
    path = Path(bundle) / SIGNER
    return path.read_text() if path.is_file() else None
