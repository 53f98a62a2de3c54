"""The rules on whether the data is worth releasing: marginal fidelity and survival utility.

Both read evaluation.json, the sites' evaluation of a synthetic sample against their own rows.
Fidelity rules read the figures pooled over sites with their noise floors
(:mod:`fedsynth.evaluation.pooled_fidelity`): a figure whose floor, what a sample of the real
distribution itself would read at the sites' sizes, is above the threshold cannot tell good data
from bad at those sizes, so the rule is INCONCLUSIVE unless the value is beyond the floor too.
"""

from __future__ import annotations

import math
from typing import Any

from fedsynth.release.policy import Policy
from fedsynth.release.rules import (
    EVALUATION,
    FAIL,
    INCONCLUSIVE,
    PASS,
    Document,
    RuleResult,
    compare,
    failed,
    worst_figure,
)
from fedsynth.suppression import MIN_CELL_ROWS

# rule name -> (pooled figure, policy field, what it is, "mean" or "column")
FIDELITY_RULES = {
    "fidelity_mean_ks": ("mean_ks", "max_mean_ks", "mean KS over numeric columns", "mean"),
    "fidelity_mean_tvd": ("mean_tvd", "max_mean_tvd", "mean TVD over binary and categorical columns", "mean"),
    "fidelity_column_ks": ("ks", "max_column_ks", "worst numeric column's KS", "column"),
    "fidelity_column_tvd": ("tvd", "max_column_tvd", "worst binary or categorical column's TVD", "column"),
}

MISSING_SHARE_RULE = "fidelity_missing_share"


def _items(pooled: dict[str, Any], figure: str, kind: str) -> list[tuple[str, float, float]]:
    """(label, value, noise floor) of each thing the rule tests: the mean, or every column of a kind."""
    if kind == "mean":
        entry = pooled.get(figure)
        return [] if entry is None else [("", entry["value"], entry["noise_critical"])]
    columns = pooled.get("columns") or {}
    return [(name, c["value"], c["noise_critical"]) for name, c in columns.items() if c["statistic"] == figure]


def _power(pooled: dict[str, Any], floor: float, threshold: float) -> str:
    """What would bring the floor under the threshold: it falls as 1/sqrt(rows) at every site."""
    factor = (floor / threshold) ** 2
    rows = [r["real"] for r in (pooled.get("rows") or {}).values()]
    target = f" (about {math.ceil(factor * sum(rows) / len(rows))} training rows each)" if rows else ""
    return f"sites about {factor:.1f}x larger{target}, with a release of their pooled size"


def judge_fidelity(
    name: str, pooled: dict[str, Any], figure: str, kind: str, threshold: float, what: str
) -> RuleResult:
    """FAIL if a tested value is over the threshold and beyond its noise floor; else INCONCLUSIVE
    if some floor is over the threshold (that value could be noise, or hide a failure); else the
    plain comparison."""
    shown = f"<= {threshold:g}"
    items = _items(pooled, figure, kind)
    if not items or any(not (math.isfinite(v) and math.isfinite(c)) for _, v, c in items):
        return failed(name, shown, f"{what}: no value in {EVALUATION} (no column of this kind, or a site lacks it)")
    label, value, floor = max(items, key=lambda item: item[1])
    where = f"{what} ({label})" if kind == "column" else what
    failing = sorted((i for i in items if i[1] > threshold and i[1] > i[2]), key=lambda i: -i[1])
    unpowered = [item for item in items if item[2] > threshold and item not in failing]
    result = RuleResult(
        name=name, value=value, threshold=shown, outcome=PASS, reason=f"{where} {value:.3g} within {shown}"
    )
    if failing:
        named = ", ".join(f"{lab} {v:.3g} (noise floor {c:.3g})".lstrip() for lab, v, c in failing)
        return result.with_outcome(FAIL, f"{what} outside {shown}, beyond what noise at these sizes gives: {named}")
    if unpowered:
        worst_floor = max(c for _, _, c in unpowered)
        named = ", ".join(f"{lab} {v:.3g}".lstrip() for lab, v, _ in unpowered)
        reason = (
            f"{what}: {named}, but at these sizes a sample of the real distribution itself reads up to "
            f"{worst_floor:.3g} (95% noise floor), over {shown}: the sites are too small to tell"
        )
        return result.with_outcome(INCONCLUSIVE, reason, power=_power(pooled, worst_floor, threshold))
    return result.with_outcome(PASS, f"{result.reason} (noise floor {floor:.3g})")


def judge_missing_shares(name: str, pooled: dict[str, Any], threshold: float) -> RuleResult:
    """Every missing = "model" column's pooled missing-share gap, judged like a column rule: FAIL
    beyond the threshold and the gap's noise floor; INCONCLUSIVE where a site withheld its real share
    or the floor is over the threshold; PASS otherwise (and where no column models its missing values)."""
    shown = f"<= {threshold:g}"
    shares = {n: c["missing"] for n, c in (pooled.get("columns") or {}).items() if c.get("missing") is not None}
    if not shares:
        return RuleResult(
            name=name, value=None, threshold=shown, outcome=PASS, reason='no column has missing = "model"'
        )
    withheld = {n: s["withheld_at"] for n, s in shares.items() if s.get("gap") is None}
    known = {
        n: (abs(float(s["gap"])), float(s["noise_critical"])) for n, s in shares.items() if s.get("gap") is not None
    }
    failing = sorted(((n, g, c) for n, (g, c) in known.items() if g > threshold and g > c), key=lambda i: -i[1])
    label, (value, floor) = max(known.items(), key=lambda item: item[1][0]) if known else ("", (math.nan, math.nan))
    shown_value = value if known else None  # every real share withheld: nothing measured
    result = RuleResult(name=name, value=shown_value, threshold=shown, outcome=PASS, reason="")
    if failing:
        named = ", ".join(f"{n} {g:.3g} (noise floor {c:.3g})" for n, g, c in failing)
        return result.with_outcome(
            FAIL, f"missing share gap outside {shown}, beyond what noise at these sizes gives: {named}"
        )
    unpowered = {n: c for n, (g, c) in known.items() if c > threshold}
    if withheld or unpowered:
        parts = [f"{n}: its real share is withheld at {', '.join(sites)} (fewer than {MIN_CELL_ROWS} missing or "
                 "present values there)" for n, sites in withheld.items()]  # fmt: skip
        parts += [f"{n}: a sample of the real rows reads a gap up to {c:.3g}" for n, c in unpowered.items()]
        if withheld:
            power = f"at least {MIN_CELL_ROWS} missing and {MIN_CELL_ROWS} present values of each column at every site"
        else:
            power = _power(pooled, max(unpowered.values()), threshold)
        reason = f"missing share gap: {'; '.join(parts)}, over {shown}: the sites are too small to tell"
        return result.with_outcome(INCONCLUSIVE, reason, power=power)
    return result.with_outcome(
        PASS, f"missing share of {label} off by {value:.3g}, within {shown} (noise floor {floor:.3g})"
    )


def fidelity_rules(evaluation: Document, policy: Policy) -> list[RuleResult]:
    """The fidelity rules on the pooled figures (a missing or unpooled figure FAILS)."""
    pooled, problem = worst_figure(evaluation, "fidelity")
    if problem is None and pooled.get("problem"):
        problem = f"fidelity not pooled over sites: {pooled['problem']}"
    results = []
    for name, (figure, field, what, kind) in FIDELITY_RULES.items():
        threshold = getattr(policy.fidelity, field)
        if problem is not None:
            results.append(failed(name, f"<= {threshold:g}", problem))
        else:
            results.append(judge_fidelity(name, pooled, figure, kind, threshold, what))
    threshold = policy.fidelity.max_missing_share_gap
    if problem is not None:
        results.append(failed(MISSING_SHARE_RULE, f"<= {threshold:g}", problem))
    else:
        results.append(judge_missing_shares(MISSING_SHARE_RULE, pooled, threshold))
    return results


def utility_rules(evaluation: Document, policy: Policy) -> list[RuleResult]:
    rules = policy.utility
    pooled = rules.combine_sites == "pooled"
    checks = [
        (
            "hr_in_ci_fraction",
            "hr_in_ci_pooled_fraction" if pooled else "hr_in_ci_fraction",
            ">=",
            rules.min_hr_in_ci_fraction,
            "hazard ratios in the real CI",
        ),
        ("tstr_c_index_gap", "tstr_uno_c_shortfall", "<=", rules.max_tstr_c_index_gap, "TRTR - TSTR Uno C-index"),
        ("tstr_calibration_ici", "tstr_ici", "<=", rules.max_tstr_ici, "TSTR calibration ICI"),
    ]
    unscored, problem = worst_figure(evaluation, "sites_not_scored")
    results = []
    for name, key, op, threshold, what in checks:
        value, value_problem = worst_figure(evaluation, key)
        if problem or value_problem:
            results.append(failed(name, f"{op} {threshold:g}", problem or value_problem or ""))
        elif unscored:
            # The worst figure would silently skip the sites where a fit failed.
            reason = f"not scored at {', '.join(unscored)} (a fit failed there; see {EVALUATION})"
            results.append(failed(name, f"{op} {threshold:g}", reason))
        else:
            where = "all sites' covariates" if pooled and key == "hr_in_ci_pooled_fraction" else "worst site"
            results.append(compare(name, value, op, threshold, f"{what} ({where})"))
    return results
