"""Ed25519 signing keys for the release board and the sites, with errors that say what to do.

``fedsynth release keygen DIR --name board`` writes ``board.key.pem`` (PKCS#8, readable by its
owner only: whoever holds it can sign releases) and ``board.pub.pem`` (give it to whoever
verifies). A key is named by its fingerprint, the SHA-256 of its raw 32 public bytes, so a
manifest can say which key signed it without carrying the key.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedsynth.errors import UserError

PRIVATE_SUFFIX, PUBLIC_SUFFIX = ".key.pem", ".pub.pem"


class ReleaseKeyError(UserError, ValueError):
    """A key file is missing, unreadable or not an Ed25519 key of the expected kind."""


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 (hex) of the raw public key: how manifests and messages name a key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def keygen(directory: str | Path, name: str, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``NAME.key.pem`` (mode 0600) and ``NAME.pub.pem`` in ``directory``; return both paths."""
    if not name or "/" in name or name.startswith("."):
        raise ReleaseKeyError(f"--name {name!r} is not a file name; use e.g. 'board' or 'site-0'")
    directory = Path(directory)
    private_path, public_path = directory / f"{name}{PRIVATE_SUFFIX}", directory / f"{name}{PUBLIC_SUFFIX}"
    for path in (private_path, public_path):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; choose another --name or pass --force to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Created 0600 from the start: never world-readable, not even between write and chmod.
    private_path.unlink(missing_ok=True)
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private_path, public_path


def _read(path: str | Path, what: str) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ReleaseKeyError(f"{what} not found: {path}; make one with `fedsynth release keygen`") from None
    except IsADirectoryError:
        raise ReleaseKeyError(f"{what} {path} is a directory; give the .pem file") from None


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in PEM file ``path``."""
    data = _read(path, "private key")
    if b"PUBLIC KEY" in data:
        raise ReleaseKeyError(f"{path} is a public key; signing needs the private key (*{PRIVATE_SUFFIX})")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ReleaseKeyError(f"{path} is password-protected; fedsynth reads unencrypted PKCS#8 keys") from None
    except ValueError:
        raise ReleaseKeyError(f"{path} is not a PEM private key; make one with `fedsynth release keygen`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseKeyError(f"{path} holds a {type(key).__name__}; releases are signed with Ed25519 keys")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """The Ed25519 public key in PEM file ``path``."""
    data = _read(path, "public key")
    if b"PRIVATE KEY" in data:
        raise ReleaseKeyError(f"{path} is a private key; verify with the public key (*{PUBLIC_SUFFIX}), never share it")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise ReleaseKeyError(f"{path} is not a PEM public key; use the *{PUBLIC_SUFFIX} from keygen") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ReleaseKeyError(f"{path} holds a {type(key).__name__}; releases are verified with Ed25519 keys")
    return key
