"""Ed25519 key files: private key owner-only, never overwritten silently, misuse explained."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.release.keys import ReleaseKeyError, fingerprint, keygen, load_private_key, load_public_key


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["release", "keygen", str(tmp_path), "--name", "board"])
    assert result.exit_code == 0, result.output
    private, public = tmp_path / "board.key.pem", tmp_path / "board.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = load_private_key(private)
    assert fingerprint(key.public_key()) == fingerprint(load_public_key(public))
    assert fingerprint(load_public_key(public)) in result.output
    again = CliRunner().invoke(app, ["release", "keygen", str(tmp_path), "--name", "board"])
    assert again.exit_code == 2 and "already exists" in again.output
    assert load_private_key(private).private_bytes_raw() == key.private_bytes_raw()


def test_key_misuse_is_explained(tmp_path: Path) -> None:
    private, public = keygen(tmp_path, "site-0")
    with pytest.raises(ReleaseKeyError, match="is a public key; signing needs the private key"):
        load_private_key(public)
    with pytest.raises(ReleaseKeyError, match="is a private key; verify with the public key"):
        load_public_key(private)
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(ReleaseKeyError, match="is not a PEM private key"):
        load_private_key(tmp_path / "junk.pem")
    with pytest.raises(ReleaseKeyError, match="public key not found: .*nope.pub.pem; make one with"):
        load_public_key(tmp_path / "nope.pub.pem")
    with pytest.raises(ReleaseKeyError, match="is not a file name"):
        keygen(tmp_path, "../x")
