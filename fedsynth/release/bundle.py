"""The signed release bundle: what leaves the network, hashed, signed, and nothing else.

    BUNDLE/
      synthetic.csv (+ .provenance.json)   the released rows, sampled from the DP model only
      schema.toml, budget.json, policy.toml
      [audit.json, evaluation.json, report.html]   only if the policy's include_site_results
      manifest.json   SHA-256 of every file above, model and checkpoint hashes, run config, policy,
                      budget, verdict, forced-release reason, signer fingerprint, time, version
      manifest.sig    Ed25519 signature of manifest.json's exact bytes
      approvals/SITE.sig   added later, one per approving site (`fedsynth release approve`)

Audit and utility results are exact functions of real rows and are not DP (architecture,
privacy model): unless the policy asks for them, the bundle carries each such rule's pass/fail
and threshold only. The bundle is built in a temporary directory beside its destination and
renamed into place, so a failure at any step leaves no half-written bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedsynth import __version__
from fedsynth.data.io import sha256_file
from fedsynth.errors import UserError
from fedsynth.model.generators import load_generator
from fedsynth.release.binding import ReleaseFile, ReleaseFileError, check_release_file
from fedsynth.release.keys import fingerprint
from fedsynth.release.policy import Policy
from fedsynth.release.report import write_report
from fedsynth.release.rules import AUDIT, BUDGET, DP_RULES, EVALUATION, synthetic_file
from fedsynth.release.signoff import ForcedRelease, Verdict, evaluate_policy, write_signoff
from fedsynth.server.evidence import check_dp_claim

FORMAT = "fedsynth-release/1"
MANIFEST, SIGNATURE, APPROVALS = "manifest.json", "manifest.sig", "approvals"
REPORT = "report.html"


class ReleaseRefusedError(UserError, ValueError):
    """The verdict failed and no forced release was asked for: no bundle was written."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bundle_files(bundle: Path) -> dict[str, Path]:
    """Every file in the bundle that the manifest must list (all but the manifest, its signature
    and the approvals), by POSIX path relative to the bundle."""
    files = {}
    for path in sorted(bundle.rglob("*")):
        relative = path.relative_to(bundle).as_posix()
        if path.is_dir() or relative in (MANIFEST, SIGNATURE) or relative.startswith(APPROVALS + "/"):
            continue
        files[relative] = path
    return files


def _public_verdict(verdict: Verdict, include_site_results: bool) -> dict[str, Any]:
    """The verdict as the bundle carries it: values of non-DP rules only if the policy says so."""
    document = verdict.model_dump(mode="json")
    if not include_site_results:
        for rule in document["rules"]:
            if rule["name"] not in DP_RULES:
                rule["value"] = None
                rule["reason"] = "value withheld: site results are not DP (policy release.include_site_results)"
    return document


def _write_report(run_dir: Path, path: Path, verdict: Verdict, forced: ForcedRelease | None) -> bool:
    """The HTML report, with this verdict: signoff.json, which the report reads otherwise, comes later."""
    write_report(run_dir, path, verdict, forced=forced)
    return path.exists()


def _model_hashes(run_dir: Path) -> dict[str, Any]:
    from fedsynth.model.generators import load_generator, weights_digest
    from fedsynth.model.persistence import model_digest
    from fedsynth.server.run import RunDirectory

    checkpoint = RunDirectory(run_dir).latest_checkpoint()
    return {
        "manifest_sha256": model_digest(run_dir / "model"),
        "weights_sha256": weights_digest(load_generator(run_dir / "model")),
        "checkpoint": {"round": checkpoint.round, "sha256": checkpoint.sha256} if checkpoint else None,
    }


def build_bundle(
    run_dir: str | Path,
    output: str | Path,
    verdict: Verdict,
    policy: Policy,
    policy_text: str,
    key: Ed25519PrivateKey,
    forced: ForcedRelease | None = None,
    release: ReleaseFile | None = None,
) -> Path:
    """Write the signed bundle for ``run_dir`` at ``output`` (which must not exist); return it.

    ``release``: the synthetic file as checked; its copy in the bundle must still have that
    SHA-256 (a file swapped between the check and the copy is refused, not signed)."""
    run_dir, output = Path(run_dir), Path(output)
    if not verdict.passed and forced is None:
        raise ReleaseRefusedError("the verdict failed; a bundle needs a PASS or a forced release with a reason")
    if output.exists():
        raise FileExistsError(f"{output} already exists; remove it or choose another --output")
    data = synthetic_file(run_dir)
    if data is None:
        raise FileNotFoundError(f"{run_dir} holds no synthetic data to release (synthetic.csv or .parquet)")
    include = policy.release.include_site_results
    sources = [data, data.with_name(data.name + ".provenance.json"), run_dir / "schema.toml", run_dir / BUDGET]
    if include:
        sources += [run_dir / AUDIT, run_dir / EVALUATION]
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would hide a public release from its readers
        for source in sources:
            if not source.exists():
                raise FileNotFoundError(f"{source} is missing; it belongs in the release bundle")
            shutil.copyfile(source, staging / source.name)
        if release is not None and sha256_file(staging / data.name) != release.sha256:
            raise ReleaseFileError(f"{data} changed while it was signed off; sign off again")
        (staging / "policy.toml").write_text(policy_text, encoding="utf-8")
        report = include and _write_report(run_dir, staging / REPORT, verdict, forced)
        run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        budget = json.loads((run_dir / BUDGET).read_text(encoding="utf-8"))
        manifest = {
            "format": FORMAT,
            "fedsynth_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "run_id": run.get("run_id"),
            "sites": sorted(s["site"] for s in budget["sites"]),
            "files": {name: sha256_bytes(path.read_bytes()) for name, path in bundle_files(staging).items()},
            "model": _model_hashes(run_dir),
            "run_config": run.get("config"),
            "policy": policy.model_dump(mode="json"),
            "budget": budget,
            "site_results": "bundled" if include else "withheld (not DP; policy release.include_site_results)",
            "report": REPORT if report else None,
            "verdict": _public_verdict(verdict, include),
            "forced": forced.model_dump(mode="json") if forced else None,
            "signer": {"algorithm": "Ed25519", "public_key_sha256": fingerprint(key.public_key())},
        }
        manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        (staging / MANIFEST).write_bytes(manifest_bytes)
        (staging / SIGNATURE).write_bytes(key.sign(manifest_bytes))
        os.rename(staging, output)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return output


def sign_off(
    run_dir: str | Path,
    policy: Policy,
    policy_text: str,
    key: Ed25519PrivateKey,
    output: str | Path | None = None,
    force_reason: str | None = None,
) -> tuple[Verdict, Path | None]:
    """Evaluate the policy, record it in RUN_DIR/signoff.json, and bundle on PASS (or when forced
    with a reason). Returns the verdict and the bundle's path (None: no bundle).

    Refused before anything is written, forced or not (:class:`ReleaseFileError`,
    :class:`fedsynth.server.evidence.DPClaimError`): a synthetic file that is not provably
    RUN_DIR/model's output for its sidecar's n, seed and conditions, and a model whose
    model.json claims DP that the run's records do not show. A board may override a policy
    threshold with a reason; it cannot release rows that are not the model's."""
    run_dir = Path(run_dir)
    output = Path(output) if output is not None else run_dir / "release"
    if force_reason is not None and not force_reason.strip():
        raise ValueError("--force needs --reason: a forced release records why the board overrode the verdict")
    if output.exists():
        raise FileExistsError(f"{output} already exists; remove it or choose another --output")
    release = check_release_file(run_dir)
    check_dp_claim(run_dir / "model", load_generator(run_dir / "model"))
    verdict = evaluate_policy(run_dir, policy, release)
    forced = None
    if not verdict.passed and force_reason is not None:
        forced = ForcedRelease(reason=force_reason.strip(), failed_rules=[r.name for r in verdict.failed_rules])
    bundle = None
    if verdict.passed or forced is not None:
        bundle = build_bundle(run_dir, output, verdict, policy, policy_text, key, forced, release)
    write_signoff(run_dir, verdict, policy, forced, bundle)
    return verdict, bundle


def check_files(bundle: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems with the bundle's files against the manifest: each one named (empty: all match)."""
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        return [f"{MANIFEST} lists no files; it is not a fedsynth release manifest"]
    problems = []
    present = bundle_files(bundle)
    for name, digest in sorted(listed.items()):
        path = bundle / name
        if name not in present:
            problems.append(f"{name} is missing from the bundle (listed in {MANIFEST})")
        elif sha256_bytes(path.read_bytes()) != digest:
            problems.append(f"{name} does not match its SHA-256 in {MANIFEST}: the file was modified")
    for name in sorted(set(present) - set(listed)):
        problems.append(f"{name} is not listed in {MANIFEST}: it was added after signing")
    return problems
