"""Site approvals: each data provider signs the release manifest with its own Ed25519 key.

A site approves exactly the bytes of ``manifest.json`` (which pins every file by SHA-256), so an
approval cannot be moved to another bundle or survive a change to this one. Approvals live in
``approvals/SITE.sig`` beside the manifest; they are not listed in it (they come after it).
Trusted site keys are a directory of ``SITE.pub.pem`` files, as ``fedsynth release keygen
DIR --name SITE`` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedsynth.data.io import atomic_path
from fedsynth.errors import UserError
from fedsynth.release.bundle import APPROVALS, MANIFEST, check_files
from fedsynth.release.keys import PUBLIC_SUFFIX, ReleaseKeyError, load_public_key


class ApprovalError(UserError, ValueError):
    """A site cannot approve this bundle; the message says why."""


def read_manifest(bundle: Path) -> tuple[bytes, dict[str, Any]]:
    """The manifest's exact bytes (what is signed) and its parsed content."""
    path = bundle / MANIFEST
    if not bundle.is_dir():
        raise FileNotFoundError(f"bundle directory not found: {bundle}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{MANIFEST} is missing from {bundle}: not a release bundle") from None
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApprovalError(f"{MANIFEST} is not valid JSON: it was modified or truncated") from None
    if not isinstance(manifest, dict):
        raise ApprovalError(f"{MANIFEST} is not a JSON object: not a fedsynth release manifest")
    return data, manifest


def approve(bundle: str | Path, key: Ed25519PrivateKey, site: str, overwrite: bool = False) -> Path:
    """Sign the bundle's manifest as ``site``; the bundle's files must match it first."""
    bundle = Path(bundle)
    data, manifest = read_manifest(bundle)
    sites = manifest.get("sites", [])
    if site not in sites:
        raise ApprovalError(f"site {site!r} is not in this release (its sites: {', '.join(sites) or 'none'})")
    problems = check_files(bundle, manifest)
    if problems:
        raise ApprovalError("refusing to approve a bundle that does not match its manifest: " + "; ".join(problems))
    target = bundle / APPROVALS / f"{site}.sig"
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass --force to replace this site's approval")
    with atomic_path(target) as tmp:
        tmp.write_bytes(key.sign(data))
    return target


def check_approvals(
    bundle: Path, manifest_bytes: bytes, manifest: dict[str, Any], site_keys: Path | None, required: bool
) -> tuple[list[str], list[str]]:
    """(problems, notes) about the approvals: an unknown or invalid approval is always a problem;
    a missing one only where the policy requires every site's approval."""
    problems: list[str] = []
    notes: list[str] = []
    sites = list(manifest.get("sites", []))
    directory = bundle / APPROVALS
    present = sorted(p for p in directory.iterdir()) if directory.is_dir() else []
    approved = []
    for path in present:
        name = f"{APPROVALS}/{path.name}"
        site = path.name.removesuffix(".sig")
        if not path.is_file() or not path.name.endswith(".sig") or site not in sites:
            problems.append(f"{name} is not an approval of a site in this release (sites: {', '.join(sites)})")
            continue
        if site_keys is None:
            continue
        key_path = site_keys / f"{site}{PUBLIC_SUFFIX}"
        if not key_path.exists():
            problems.append(f"{name}: no trusted key for {site} ({key_path} is missing)")
            continue
        try:
            load_public_key(key_path).verify(path.read_bytes(), manifest_bytes)
        except ReleaseKeyError as exc:
            problems.append(f"{name}: {exc}")
        except InvalidSignature:
            problems.append(f"{name} is not {site}'s signature of {MANIFEST} (modified, or signed by another key)")
        else:
            approved.append(site)
    if site_keys is None:
        if required:
            problems.append("the policy requires every site's approval: pass --site-keys DIR with SITE.pub.pem files")
        elif present:
            notes.append(f"{len(present)} approval(s) present but not checked (no --site-keys given)")
        return problems, notes
    missing = [s for s in sites if s not in approved and not (directory / f"{s}.sig").exists()]
    if required and missing:
        problems.append(f"the policy requires every site's approval; none from {', '.join(missing)}")
    if approved:
        notes.append(f"approved by {', '.join(approved)}")
    return problems, notes
