"""The sign-off verdict: every rule of the policy tested against a run's evidence.

``evaluate_policy`` reads only what the run directory holds (budget.json, audit.json,
evaluation.json, the model, the run's DP records and the synthetic data with its provenance,
regenerated from the model: :mod:`fedsynth.release.binding`) and returns a :class:`Verdict`:
FAIL if any rule fails, else INCONCLUSIVE if any rule lacks the power to tell, else PASS.
``sign_off`` records the verdict in ``RUN_DIR/signoff.json`` and, on PASS or on a forced release
with its reason, builds the signed bundle.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from fedsynth import __version__
from fedsynth.data.io import write_text
from fedsynth.release.binding import ReleaseFile, ReleaseFileError, check_release_file
from fedsynth.release.policy import Policy
from fedsynth.release.quality_rules import fidelity_rules, utility_rules
from fedsynth.release.rules import (
    AUDIT,
    BUDGET,
    EVALUATION,
    FAIL,
    INCONCLUSIVE,
    PASS,
    Outcome,
    RuleResult,
    approvals_rule,
    budget_rules,
    evidence_rule,
    load_document,
    load_site_query,
    outcome_fields,
)
from fedsynth.release.rules_audit import audit_rules

SIGNOFF_FILE = "signoff.json"


def combine(rules: list[RuleResult]) -> Outcome:
    """FAIL if any rule fails; else INCONCLUSIVE if any lacks power; else PASS."""
    outcomes = {rule.outcome for rule in rules}
    return FAIL if FAIL in outcomes else INCONCLUSIVE if INCONCLUSIVE in outcomes else PASS


class Verdict(BaseModel):
    """The combined outcome (:func:`combine`; ``passed`` only on PASS); each rule names its value,
    threshold and reason."""

    model_config = ConfigDict(frozen=True)

    run_id: str | None
    policy: str
    passed: bool
    outcome: Outcome
    rules: list[RuleResult]
    time: str

    _agree = model_validator(mode="before")(outcome_fields)

    @property
    def failed_rules(self) -> list[RuleResult]:
        """Every rule that did not pass, failed or inconclusive (what a forced release overrides)."""
        return [rule for rule in self.rules if not rule.passed]

    @property
    def inconclusive_rules(self) -> list[RuleResult]:
        return [rule for rule in self.rules if rule.outcome == INCONCLUSIVE]


class ForcedRelease(BaseModel):
    """A release the board made although the verdict failed: who decided is the key; why is here."""

    model_config = ConfigDict(frozen=True)

    reason: str
    failed_rules: list[str]


def evaluate_policy(run_dir: str | Path, policy: Policy, release: ReleaseFile | None = None) -> Verdict:
    """Test every rule of ``policy`` against the evidence in ``run_dir``.

    ``release``: the synthetic file already checked by :func:`check_release_file` (the sign-off
    checks it first, and refuses); otherwise it is checked here and a refusal fails the
    evidence rule, saying why.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    checked: ReleaseFile | str
    if release is not None:
        checked = release
    else:
        try:
            checked = check_release_file(run_dir)
        except ReleaseFileError as exc:
            checked = str(exc)
    run = load_document(run_dir, "run.json")
    budget = load_document(run_dir, BUDGET)
    audit, evaluation = load_site_query(run_dir, AUDIT), load_site_query(run_dir, EVALUATION)
    rules = [
        evidence_rule(run_dir, budget, audit, evaluation, checked),
        *budget_rules(budget, policy),
        *audit_rules(audit, policy),
        *fidelity_rules(evaluation, policy),
        *utility_rules(evaluation, policy),
        approvals_rule(policy, budget),
    ]
    return Verdict(
        run_id=(run.data or {}).get("run_id"),
        policy=policy.name,
        outcome=combine(rules),
        rules=rules,
        time=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _model_sha256(run_dir: Path) -> str | None:
    from fedsynth.model.persistence import model_digest

    return model_digest(run_dir / "model") if (run_dir / "model" / "manifest.json").exists() else None


def write_signoff(
    run_dir: Path, verdict: Verdict, policy: Policy, forced: ForcedRelease | None, bundle: Path | None
) -> Path:
    """RUN_DIR/signoff.json: the coordinator's full record (values included), bundle or not."""
    record = {
        "fedsynth_version": __version__,
        "verdict": verdict.model_dump(mode="json"),
        # Binds the verdict to the model's files: the sampling service serves only a signed-off model.
        "model_sha256": _model_sha256(run_dir),
        "policy": policy.model_dump(mode="json"),
        "forced": forced.model_dump(mode="json") if forced else None,
        "bundle": str(bundle) if bundle else None,
    }
    return write_text(run_dir / SIGNOFF_FILE, json.dumps(record, indent=2) + "\n")
