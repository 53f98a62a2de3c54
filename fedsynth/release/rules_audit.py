"""The sign-off rules on the sites' privacy audit (audit.json): does the guarantee hold in practice?

Same conventions as :mod:`fedsynth.release.rules`: missing evidence FAILS and says why, evidence
without the power to tell is INCONCLUSIVE and says what would decide.
"""

from __future__ import annotations

import math
from typing import Any

from scipy.stats import beta

from fedsynth.release.policy import Policy
from fedsynth.release.rules import FAIL, INCONCLUSIVE, PASS, Document, RuleResult, compare, failed, worst_figure


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
        ("mia_auc_upper_ci", "mia_auc_upper_ci", "<=", rules.max_mia_auc_upper_ci, "best attack's AUC upper 95% CI"),
        (
            "empirical_epsilon",
            "empirical_minus_accountant_epsilon",
            "<=",
            rules.max_empirical_epsilon_excess,
            "empirical minus accountant epsilon",
        ),
    ]
    results = [dcr_share_rule(audit, policy), exact_match_rule(audit, policy)]
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


def clopper_pearson_upper(count: int, trials: int, level: float = 0.95) -> float:
    """The exact two-sided ``level`` upper limit of a binomial share (1.0 when nothing was tried)."""
    if trials <= 0 or count >= trials:
        return 1.0
    return float(beta.ppf(1 - (1 - level) / 2, count + 1, trials - count))


def exact_match_rule(audit: Document, policy: Policy) -> RuleResult:
    """Synthetic rows identical to a training patient, against how often an unseen patient is.

    Where columns are coarse (integers, categories), two real patients share a whole record by
    chance; a synthetic row that does so is a copy only if it happens more often than for unseen
    patients. ``exact_matches_baseline = "holdout"`` passes when the synthetic share is within the
    holdout share's exact upper 95% limit (a copy of the training rows reads 100%); ``"none"``
    tests the count against ``max_exact_matches``.
    """
    rules, name = policy.audit, "exact_matches"
    count, problem = worst_figure(audit, "exact_matches")
    if problem is not None:
        return failed(name, f"<= {rules.max_exact_matches}", problem)
    assert audit.data is not None
    worst = audit.data["worst"]
    holdout = worst.get("exact_matches_holdout")
    if rules.exact_matches_baseline == "none" or holdout is None:
        result = compare(
            name, count, "<=", rules.max_exact_matches, "synthetic rows equal to a training row, all sites"
        )
        if holdout is None and rules.exact_matches_baseline == "holdout":
            return result.with_outcome(result.outcome, f"{result.reason} (audit.json has no holdout baseline)")
        return result
    n_synthetic, n_holdout = int(worst["exact_matches_n_synthetic"]), int(worst["exact_matches_n_holdout"])
    share, limit = count / max(n_synthetic, 1), clopper_pearson_upper(int(holdout), n_holdout)
    passed = share <= limit
    reason = (
        f"{count} of {n_synthetic} synthetic rows ({share:.3%}) equal a training row; unseen patients do "
        f"{holdout} of {n_holdout} times (upper 95% {limit:.3%}): "
        + ("within that limit: no more often than chance" if passed else "outside that limit: copies, not chance")
    )
    return RuleResult(name=name, value=share, threshold=f"<= {limit:.4g} (holdout)", passed=passed, reason=reason)
