"""Verify a release bundle: the board's signature, every file's hash, nothing extra, approvals.

Every problem is collected and named (the file, and what is wrong with it), so whoever
received a bundle learns at once everything that does not hold. The manifest is trusted only
through the signature, checked against a public key the verifier got from the board directly
(``--key``), never one shipped inside the bundle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedsynth.release.approvals import ApprovalError, check_approvals, read_manifest
from fedsynth.release.bundle import FORMAT, MANIFEST, SIGNATURE, check_files
from fedsynth.release.keys import fingerprint


@dataclass
class Verification:
    """What verify found: ``ok`` only with no problem."""

    bundle: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    manifest: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_signature(
    bundle: Path, manifest_bytes: bytes, manifest: dict[str, Any], key: Ed25519PublicKey
) -> str | None:
    signature_path = bundle / SIGNATURE
    if not signature_path.exists():
        return f"{SIGNATURE} is missing: the bundle is unsigned"
    try:
        key.verify(signature_path.read_bytes(), manifest_bytes)
    except InvalidSignature:
        claimed = (manifest.get("signer") or {}).get("public_key_sha256")
        given = fingerprint(key)
        if claimed and claimed != given:
            return (
                f"{SIGNATURE} does not verify with the key given (fingerprint {given[:16]}...); "
                f"{MANIFEST} names signer {str(claimed)[:16]}...: wrong public key, or the manifest was modified"
            )
        return f"{SIGNATURE} is not a valid signature of {MANIFEST} by this key: {MANIFEST} or {SIGNATURE} was modified"
    return None


def verify_bundle(bundle: str | Path, key: Ed25519PublicKey, site_keys: str | Path | None = None) -> Verification:
    """Check ``bundle`` against the board's public ``key`` (and the sites' keys in ``site_keys``)."""
    bundle = Path(bundle)
    result = Verification(bundle)
    if not (bundle / MANIFEST).is_file():
        result.problems.append(f"{MANIFEST} is missing from {bundle}: not a release bundle, or it was removed")
        return result
    try:
        manifest_bytes, manifest = read_manifest(bundle)
    except ApprovalError as exc:  # unreadable: the signature check below says the rest
        manifest_bytes, manifest = (bundle / MANIFEST).read_bytes(), {}
        result.problems.append(str(exc))
    result.manifest = manifest
    problem = _check_signature(bundle, manifest_bytes, manifest, key)
    if problem:
        result.problems.insert(0, problem)
    if manifest and manifest.get("format") != FORMAT:
        result.problems.append(f"{MANIFEST} has format {manifest.get('format')!r}; this fedsynth reads {FORMAT}")
    if manifest:
        result.problems += check_files(bundle, manifest)
    required = bool(((manifest.get("policy") or {}).get("release") or {}).get("require_site_approvals"))
    problems, notes = check_approvals(
        bundle, manifest_bytes, manifest, Path(site_keys) if site_keys is not None else None, required
    )
    result.problems += problems
    result.notes += notes
    return result
