"""Verify: any changed, added or missing byte of a bundle fails, naming what is wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.release.approvals import ApprovalError, approve
from fedsynth.release.bundle import sign_off
from fedsynth.release.keys import keygen, load_private_key, load_public_key
from fedsynth.release.verify import verify_bundle

BUNDLE_FILES = [
    "budget.json",
    "manifest.json",
    "manifest.sig",
    "policy.toml",
    "schema.toml",
    "synthetic.csv",
    "synthetic.csv.provenance.json",
]


@pytest.fixture()
def bundle(signed_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(signed_bundle, tmp_path / "bundle"))


def _verify(bundle: Path, public: Path, site_keys: Path | None = None) -> list[str]:
    return verify_bundle(bundle, load_public_key(public), site_keys).problems


def test_the_bundle_holds_exactly_these_files_and_verifies(bundle: Path, board_keys) -> None:
    assert sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*")) == BUNDLE_FILES
    assert _verify(bundle, board_keys[1]) == []
    result = CliRunner().invoke(app, ["verify", str(bundle), "--key", str(board_keys[1])])
    assert result.exit_code == 0 and "OK" in result.output and "verdict PASS" in result.output


@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_one_flipped_byte_in_any_file_fails_naming_it(bundle: Path, board_keys, name: str) -> None:
    path = bundle / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    problems = _verify(bundle, board_keys[1])
    assert problems and any(name in problem for problem in problems), problems
    if name in ("manifest.json", "manifest.sig"):
        assert "manifest.sig is not a valid signature of manifest.json" in problems[0]
    else:
        assert f"{name} does not match its SHA-256 in manifest.json: the file was modified" in problems
    result = CliRunner().invoke(app, ["verify", str(bundle), "--key", str(board_keys[1])], terminal_width=300)
    assert result.exit_code == 1 and name in result.output


def test_an_added_file_fails(bundle: Path, board_keys) -> None:
    (bundle / "extra").mkdir()
    (bundle / "extra" / "notes.txt").write_text("not signed")
    assert _verify(bundle, board_keys[1]) == [
        "extra/notes.txt is not listed in manifest.json: it was added after signing"
    ]


def test_a_missing_file_fails(bundle: Path, board_keys) -> None:
    (bundle / "synthetic.csv").unlink()
    assert _verify(bundle, board_keys[1]) == ["synthetic.csv is missing from the bundle (listed in manifest.json)"]
    (bundle / "manifest.sig").unlink()
    assert "manifest.sig is missing: the bundle is unsigned" in _verify(bundle, board_keys[1])
    (bundle / "manifest.json").unlink()
    assert "manifest.json is missing" in _verify(bundle, board_keys[1])[0]


def test_another_public_key_fails(bundle: Path, tmp_path: Path) -> None:
    _, other = keygen(tmp_path / "other", "board")
    (problem,) = _verify(bundle, other)
    assert "does not verify with the key given" in problem and "wrong public key" in problem


def test_a_forged_manifest_signed_by_another_key_fails(bundle: Path, board_keys, tmp_path: Path) -> None:
    forger, _ = keygen(tmp_path / "forger", "board")
    (bundle / "manifest.sig").write_bytes(load_private_key(forger).sign((bundle / "manifest.json").read_bytes()))
    assert "manifest.sig" in _verify(bundle, board_keys[1])[0]


@pytest.fixture()
def approval_bundle(demo_run: Path, board_keys, demo_policy, tmp_path: Path) -> tuple[Path, Path]:
    """A bundle whose policy requires every site's approval, and a directory of site keys."""
    policy = demo_policy
    policy = policy.model_copy(update={"release": policy.release.model_copy(update={"require_site_approvals": True})})
    _, bundle = sign_off(demo_run, policy, "require approvals", load_private_key(board_keys[0]))
    keys = tmp_path / "site-keys"
    for site in ("site-0", "site-1", "site-2"):
        keygen(keys, site)
    return bundle, keys


def test_required_approvals_from_every_site(approval_bundle, board_keys, tmp_path: Path) -> None:
    bundle, keys = approval_bundle
    public = board_keys[1]
    assert "pass --site-keys DIR" in _verify(bundle, public)[0]
    assert _verify(bundle, public, keys) == [
        "the policy requires every site's approval; none from site-0, site-1, site-2"
    ]
    approve(bundle, load_private_key(keys / "site-0.key.pem"), "site-0")
    result = CliRunner().invoke(
        app, ["release", "approve", str(bundle), "--key", str(keys / "site-1.key.pem"), "--site", "site-1"]
    )
    assert result.exit_code == 0, result.output
    assert _verify(bundle, public, keys) == ["the policy requires every site's approval; none from site-2"]
    # site-2 signs with site-0's key: not site-2's approval.
    approve(bundle, load_private_key(keys / "site-0.key.pem"), "site-2")
    assert _verify(bundle, public, keys) == [
        "approvals/site-2.sig is not site-2's signature of manifest.json (modified, or signed by another key)"
    ]
    approve(bundle, load_private_key(keys / "site-2.key.pem"), "site-2", overwrite=True)
    assert _verify(bundle, public, keys) == []
    result = CliRunner().invoke(app, ["verify", str(bundle), "--key", str(public), "--site-keys", str(keys)])
    assert result.exit_code == 0 and "approved by site-0, site-1, site-2" in result.output

    signature = bundle / "approvals" / "site-1.sig"
    data = bytearray(signature.read_bytes())
    data[0] ^= 0x01
    signature.write_bytes(bytes(data))
    assert _verify(bundle, public, keys) == [
        "approvals/site-1.sig is not site-1's signature of manifest.json (modified, or signed by another key)"
    ]
    (bundle / "approvals" / "site-9.sig").write_bytes(b"x")
    assert any(
        "approvals/site-9.sig is not an approval of a site in this release" in p for p in _verify(bundle, public, keys)
    )


def test_a_site_approves_only_its_own_release_and_an_intact_bundle(approval_bundle) -> None:
    bundle, keys = approval_bundle
    key = load_private_key(keys / "site-0.key.pem")
    with pytest.raises(ApprovalError, match=r"site 'site-7' is not in this release \(its sites: site-0, site-1"):
        approve(bundle, key, "site-7")
    (bundle / "synthetic.csv").write_text("age\n1\n")
    with pytest.raises(ApprovalError, match="synthetic.csv does not match its SHA-256"):
        approve(bundle, key, "site-0")
    assert not (bundle / "approvals").exists()
