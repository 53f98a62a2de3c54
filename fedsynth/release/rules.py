"""Each sign-off rule: read its evidence from the run directory, compare with its threshold.

A rule whose evidence is missing, unreadable or incomplete FAILS and says which file and why:
a release decision with a site's evidence absent would be a guess about that site's patients.
A rule whose evidence is there but lacks the power to tell (a withheld measurement, a CI or a
noise floor wider than the policy allows) is INCONCLUSIVE, and says what would give it power.
Every result carries the value tested, the threshold and the comparison, so a board reads why.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from fedsynth.release.binding import SYNTHETIC_NAMES, ReleaseFile, audit_binding_problems, synthetic_file
from fedsynth.release.policy import Policy

__all__ = ["SYNTHETIC_NAMES", "synthetic_file"]  # read from here by the bundle and the report

AUDIT, EVALUATION, BUDGET = "audit.json", "evaluation.json", "budget.json"
# Rules whose value is computed from DP accounting alone; the others read real rows at the sites.
DP_RULES = frozenset({"max_epsilon", "delta_below_1_over_n", "site_approvals"})
HOW_TO_MAKE = {
    AUDIT: "run `fedsynth audit RUN_DIR`",
    EVALUATION: "run `fedsynth evaluate RUN_DIR`",
    BUDGET: "run `fedsynth budget RUN_DIR`",
}
COMPARE: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge, "<": operator.lt}


Outcome = Literal["PASS", "FAIL", "INCONCLUSIVE"]
PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"


def outcome_fields(data: Any) -> Any:
    """``outcome`` and ``passed`` agree (passed only for PASS); either one may be given: records
    written before INCONCLUSIVE existed carry ``passed`` alone."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    if data.get("outcome") is None:
        data["outcome"] = PASS if data.get("passed") else FAIL
    elif "passed" not in data:
        data["passed"] = data["outcome"] == PASS
    elif bool(data["passed"]) != (data["outcome"] == PASS):
        raise ValueError(f"passed={data['passed']} contradicts outcome {data['outcome']}")
    return data


class RuleResult(BaseModel):
    """One rule's outcome: the value tested, its threshold, PASS/FAIL/INCONCLUSIVE and why.

    ``power``: for an INCONCLUSIVE rule, what evidence would let it decide."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: float | int | str | None
    threshold: str
    passed: bool
    outcome: Outcome
    reason: str
    power: str | None = None

    _agree = model_validator(mode="before")(outcome_fields)

    def with_outcome(self, outcome: Outcome, reason: str, power: str | None = None) -> RuleResult:
        """This result with another outcome and reason (``passed`` kept consistent)."""
        update = {"outcome": outcome, "passed": outcome == PASS, "reason": reason, "power": power}
        return self.model_copy(update=update)


@dataclass(frozen=True)
class Document:
    """A JSON document of the run, or why it cannot be used."""

    name: str
    data: dict[str, Any] | None
    problem: str | None


def load_document(run_dir: Path, name: str) -> Document:
    path = run_dir / name
    if not path.exists():
        return Document(name, None, f"{name} is missing: {HOW_TO_MAKE.get(name, 'create it')}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return Document(name, None, f"{name} is not valid JSON ({exc}); re-create it")
    if not isinstance(data, dict):
        return Document(name, None, f"{name} is not a JSON object; re-create it")
    return Document(name, data, None)


def load_site_query(run_dir: Path, name: str) -> Document:
    """audit.json or evaluation.json, usable only if every site answered (then it has a worst block)."""
    document = load_document(run_dir, name)
    if document.data is None:
        return document
    if not document.data.get("complete") or not document.data.get("worst"):
        failures = "; ".join(f"node {f.get('node_id')}: {f.get('reason')}" for f in document.data.get("failures", []))
        problem = f"{name} is incomplete (not every site answered{': ' + failures if failures else ''})"
        return Document(name, None, problem + f"; {HOW_TO_MAKE[name]} again once every site is up")
    return document


def failed(name: str, threshold: str, reason: str) -> RuleResult:
    return RuleResult(name=name, value=None, threshold=threshold, outcome=FAIL, reason=reason)


def compare(name: str, value: float | None, op: str, threshold: float, what: str) -> RuleResult:
    """``value op threshold``; a missing or non-finite value fails (nothing was measured)."""
    shown = f"{op} {threshold:g}"
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return failed(name, shown, f"{what}: no value in the evidence")
    passed = COMPARE[op](value, threshold)
    verb = "within" if passed else "outside"
    return RuleResult(
        name=name, value=value, threshold=shown, passed=passed, reason=f"{what} {value:.4g} {verb} {shown}"
    )


def worst_figure(document: Document, key: str) -> tuple[Any, str | None]:
    """A figure of the document's worst-site block, or why there is none."""
    if document.data is None:
        return None, document.problem
    worst = document.data["worst"]
    if key not in worst:
        return None, f"{document.name} has no worst.{key}; re-run it with this fedsynth version"
    return worst[key], None


# -- budget: the formal DP guarantee ----------------------------------------------------------------


def budget_rules(budget: Document, policy: Policy) -> list[RuleResult]:
    rules = policy.budget
    eps_shown, delta_shown = f"<= {rules.max_epsilon:g}", f"< {rules.max_delta_times_n:g}"
    problem = budget.problem
    sites = budget.data.get("sites") if budget.data is not None else None
    if problem is None and not sites:
        problem = f"{BUDGET} lists no site that trained; nothing bounds this release's privacy loss"
    if problem is not None:
        return [failed("max_epsilon", eps_shown, problem), failed("delta_below_1_over_n", delta_shown, problem)]
    try:
        spent = {s["site"]: float(s["epsilon_spent"]) for s in sites}
        delta_n = {s["site"]: float(s["delta"]) * int(s["records"]) for s in sites}
    except (KeyError, TypeError, ValueError) as exc:
        reason = f"{BUDGET} has a site entry without {exc}; re-create it with `fedsynth budget RUN_DIR`"
        return [failed("max_epsilon", eps_shown, reason), failed("delta_below_1_over_n", delta_shown, reason)]
    eps_site = max(spent, key=spent.__getitem__)
    delta_site = max(delta_n, key=delta_n.__getitem__)
    return [
        compare("max_epsilon", spent[eps_site], "<=", rules.max_epsilon, f"epsilon spent at {eps_site}"),
        compare(
            "delta_below_1_over_n", delta_n[delta_site], "<", rules.max_delta_times_n, f"delta x n at {delta_site}"
        ),
    ]


# -- audits: does the guarantee hold in practice? -----------------------------------------------------


def _withheld_sites(audit: dict[str, Any]) -> list[str]:
    """Sites where every attack withheld its TPR at 1% FPR (too few non-members to measure it)."""
    return [s["site"] for s in audit["sites"] if all(a.get("tpr_at_1pct_fpr") is None for a in s["attacks"])]


def mia_tpr_rule(audit: Document, policy: Policy) -> RuleResult:
    rules, name = policy.audit, "mia_tpr_at_1pct_fpr"
    shown = f"<= {rules.max_mia_tpr_at_1pct_fpr:g}"
    value, problem = worst_figure(audit, name)
    if problem is not None:
        return failed(name, shown, problem)
    assert audit.data is not None
    withheld = _withheld_sites(audit.data)
    if value is not None and value > rules.max_mia_tpr_at_1pct_fpr:
        return compare(name, value, "<=", rules.max_mia_tpr_at_1pct_fpr, "worst attack's TPR at 1% FPR")
    if not withheld:
        return compare(name, value, "<=", rules.max_mia_tpr_at_1pct_fpr, "worst attack's TPR at 1% FPR")
    # DP bounds any test's power: TPR <= e^epsilon * FPR + delta (Kairouz et al. 2015).
    bound = max(
        min(1.0, math.exp(s["accountant_epsilon"]) * 0.01 + s["delta"])
        for s in audit.data["sites"]
        if s["site"] in withheld
    )
    measured = "none measured" if value is None else f"{value:.4g} where measured"
    setting = rules.mia_tpr_withheld
    reason = (
        f"withheld at {', '.join(withheld)} (fewer than 100 non-members; {measured}); DP bounds it there at "
        f"<= e^epsilon x 1% + delta = {bound:.3g}; policy audit.mia_tpr_withheld = '{setting}'"
    )
    outcome = {"pass": PASS, "fail": FAIL, "inconclusive": INCONCLUSIVE}[setting]
    return RuleResult(
        name=name,
        value="withheld" if value is None else value,
        threshold=shown,
        outcome=outcome,
        reason=reason,
        power=f"at least 100 holdout rows at {', '.join(withheld)}" if outcome == INCONCLUSIVE else None,
    )


def pooled_upper_rule(audit: Document, figure: str, threshold: float, combine: str, what: str) -> RuleResult:
    """An upper-CI rule on a figure the sites' audits pool (the DCR share, Anonymeter risks).

    The rule is named ``{figure}_upper_ci`` and reads the audit's ``{figure}_upper_ci`` (worst
    site), ``{figure}_pooled_upper_ci`` and ``{figure}_site_max`` (server/audit.py).
    ``combine = "worst"``: the worst site's upper 95% limit. ``"pooled"``: the pooled
    estimate's upper limit, and no site's own estimate above the threshold (a site whose data
    alone put the figure over the bound fails the rule whatever the pool says).
    """
    name, pooled_key, site_key = f"{figure}_upper_ci", f"{figure}_pooled_upper_ci", f"{figure}_site_max"
    shown = f"<= {threshold:g}"
    if combine == "worst":
        value, problem = worst_figure(audit, name)
        if problem:
            return failed(name, shown, problem)
        return compare(name, value, "<=", threshold, f"{what} (worst site)")
    pooled, problem = worst_figure(audit, pooled_key)
    site_max, site_problem = worst_figure(audit, site_key)
    if problem or site_problem:
        return failed(name, shown, problem or site_problem or "")
    if pooled is None and audit.data is not None and audit.data["worst"].get("pooling_problem"):
        return failed(name, shown, f"not pooled: {audit.data['worst']['pooling_problem']}; re-run the audit")
    result = compare(name, pooled, "<=", threshold, f"{what} (pooled over sites)")
    if result.passed and site_max is not None and site_max > threshold:
        return result.with_outcome(
            FAIL, f"{result.reason}, but one site's own estimate {site_max:.4g} is above {threshold:g}"
        )
    return result


def _dcr_estimate(audit: dict[str, Any], combine: str) -> float | None:
    """The DCR share whose upper limit the rule read: pooled, or the worst site's own."""
    if combine == "pooled":
        return audit["worst"].get("dcr_share_pooled")
    entries = [s.get("nearest_neighbour") or {} for s in audit.get("sites", [])]
    entries = [e for e in entries if e.get("dcr_share_ci") and e.get("dcr_share") is not None]
    if not entries:
        return None
    return max(entries, key=lambda e: e["dcr_share_ci"][1])["dcr_share"]


def dcr_share_rule(audit: Document, policy: Policy) -> RuleResult:
    """The DCR upper-CI rule; an upper limit over the threshold from a CI wider than the policy's
    limit, with the estimate itself within it, is INCONCLUSIVE: the audit cannot tell."""
    rules = policy.audit
    threshold, limit = rules.max_dcr_share_upper_ci, rules.max_dcr_share_ci_half_width
    result = pooled_upper_rule(audit, "dcr_share", threshold, rules.combine_sites, "DCR share upper 95% CI")
    if result.passed or not isinstance(result.value, float) or result.value <= threshold or audit.data is None:
        return result
    estimate = _dcr_estimate(audit.data, rules.combine_sites)
    site_max = audit.data["worst"].get("dcr_share_site_max")
    if estimate is None or estimate > threshold or (site_max is not None and site_max > threshold):
        return result
    half_width = result.value - estimate
    if half_width <= limit:
        return result
    factor = (half_width / limit) ** 2
    return result.with_outcome(
        INCONCLUSIVE,
        f"{result.reason}, but the estimate {estimate:.4g} is within it and the CI's half-width "
        f"{half_width:.3g} is over the policy's {limit:g} (audit.max_dcr_share_ci_half_width): too few "
        "holdout rows to tell",
        power=f"about {factor:.1f}x as many holdout rows (the CI narrows as 1/sqrt(rows))",
    )


def audit_rules(audit: Document, policy: Policy) -> list[RuleResult]:
    rules = policy.audit
    checks = [
        (
            "exact_matches",
            "exact_matches",
            "<=",
            rules.max_exact_matches,
            "synthetic rows equal to a training row, all sites",
        ),
        ("mia_auc_upper_ci", "mia_auc_upper_ci", "<=", rules.max_mia_auc_upper_ci, "best attack's AUC upper 95% CI"),
        (
            "empirical_epsilon",
            "empirical_minus_accountant_epsilon",
            "<=",
            rules.max_empirical_epsilon_excess,
            "empirical minus accountant epsilon",
        ),
    ]
    results = [dcr_share_rule(audit, policy)]
    for name, key, op, threshold, what in checks:
        value, problem = worst_figure(audit, key)
        if problem is not None:
            results.append(failed(name, f"{op} {threshold:g}", problem))
        else:
            results.append(compare(name, value, op, threshold, what if "all sites" in what else f"{what} (worst site)"))
    results.insert(3, mia_tpr_rule(audit, policy))
    results.append(
        pooled_upper_rule(
            audit,
            "anonymeter_risk",
            rules.max_anonymeter_risk_upper_ci,
            rules.combine_sites,
            "worst Anonymeter attack's risk upper 95% CI",
        )
    )
    return results


# -- the evidence is about this run's model and covers every site, and the file is what was audited ----


def evidence_rule(
    run_dir: Path, budget: Document, audit: Document, evaluation: Document, release: ReleaseFile | str
) -> RuleResult:
    """audit.json and evaluation.json are of RUN_DIR/model and cover every site that trained; the
    run's records show that model DP (not its own flag); ``release`` (the checked synthetic file,
    or why it was refused) regenerates from it and holds exactly the rows the sites audited."""
    from fedsynth.model.persistence import ModelFileError, generator_digest, load_model
    from fedsynth.privacy.evidence import dp_evidence

    name, shown = "evidence", "same model, every site, the audited rows"
    try:
        model = load_model(run_dir / "model")
    except ModelFileError as exc:
        return failed(name, shown, str(exc))
    problems = []
    dp = dp_evidence(run_dir / "model", model)
    if not (dp.differentially_private and model.differentially_private_):
        problems.append(f"RUN_DIR/model is not shown to be trained with DP ({dp.reason})")
    digest = generator_digest(model)
    trained = {s["site"] for s in (budget.data or {}).get("sites", [])}
    for document in (audit, evaluation):
        if document.data is None:
            problems.append(document.problem or document.name)
            continue
        if document.data.get("model_sha256") != digest:
            problems.append(f"{document.name} is of another model than RUN_DIR/model (model_sha256 differs)")
        answered = {s["site"] for s in document.data["sites"]}
        if trained - answered:
            problems.append(f"{document.name} has no result from {', '.join(sorted(trained - answered))}")
    if isinstance(release, str):
        problems.append(release)
    else:
        if not release.record.get("differentially_private"):
            problems.append(f"{release.path.name} is not labelled a DP model sample ({release.record.get('notice')})")
        if audit.data is not None:
            problems += audit_binding_problems(audit.data, release)
    if problems:
        return failed(name, shown, "; ".join(problems))
    assert not isinstance(release, str)
    return RuleResult(
        name=name,
        value=f"{len(trained)} sites",
        threshold=shown,
        passed=True,
        reason=f"audit, evaluation and {release.path.name} are of RUN_DIR/model ({dp.reason}); every site "
        f"answered and audited the very rows {release.path.name} holds (n={release.record['n']}, "
        f"seed={release.record['seed']})",
    )


def approvals_rule(policy: Policy, budget: Document) -> RuleResult:
    sites = sorted(s["site"] for s in (budget.data or {}).get("sites", []))
    if not policy.release.require_site_approvals:
        return RuleResult(
            name="site_approvals", value="not required", threshold="none", passed=True, reason="not required"
        )
    return RuleResult(
        name="site_approvals",
        value=f"required of {len(sites)} sites",
        threshold="every site",
        passed=True,
        reason=f"{', '.join(sites)} must each sign the bundle (`fedsynth release approve`); `fedsynth verify` checks",
    )
