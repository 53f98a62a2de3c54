"""Empirical epsilon: a statistical *lower* bound on the privacy loss, from an attack's scores.

Why: DP implementations are often wrong. If an attack separates members from non-members
better than (epsilon, delta)-DP allows, the accountant's epsilon cannot be right; a lower bound
above it is flagged as a probable DP bug. The bound is what (epsilon, delta)-DP implies for any
test: FPR + e^eps * FNR >= 1 - delta and FNR + e^eps * FPR >= 1 - delta, hence

    eps >= log((1 - delta - FNR) / FPR)   and   eps >= log((1 - delta - FPR) / FNR).

FPR and FNR are replaced by Clopper-Pearson *upper* confidence bounds, so the result holds at
the stated confidence. The thresholds are a fixed grid of score quantiles and the confidence
is split over all of them (Bonferroni): choosing the best threshold after the fact does not
make the bound optimistic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import beta

THRESHOLDS = 99  # score quantiles tried


@dataclass(frozen=True)
class EmpiricalEpsilon:
    epsilon_lower_bound: float
    delta: float
    confidence: float
    threshold_quantile: float | None
    fpr_upper: float | None
    fnr_upper: float | None

    def exceeds(self, accountant_epsilon: float) -> bool:
        """True if the bound is above the accountant's epsilon: a probable DP implementation bug."""
        return self.epsilon_lower_bound > accountant_epsilon

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def clopper_pearson_upper(failures: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) upper confidence bound of a binomial proportion."""
    if failures >= trials:
        return 1.0
    return float(beta.ppf(1.0 - alpha, failures + 1, trials - failures))


def empirical_epsilon(
    member_scores: np.ndarray, non_member_scores: np.ndarray, delta: float, confidence: float = 0.95
) -> EmpiricalEpsilon:
    """Largest epsilon lower bound over a fixed threshold grid (higher score = 'member')."""
    members = np.asarray(member_scores, dtype=float)
    non_members = np.asarray(non_member_scores, dtype=float)
    if len(members) < 1 or len(non_members) < 1:
        raise ValueError("need member and non-member scores")
    if not 0.0 <= delta < 1.0 or not 0.0 < confidence < 1.0:
        raise ValueError(f"delta must be in [0, 1) and confidence in (0, 1), got {delta}, {confidence}")
    quantiles = np.linspace(0.0, 1.0, THRESHOLDS + 2)[1:-1]
    thresholds = np.quantile(np.concatenate([members, non_members]), quantiles)
    # Two inequalities per threshold, two bounds (FPR, FNR) each: split alpha over all of them.
    alpha = (1.0 - confidence) / (2 * len(thresholds))
    best = EmpiricalEpsilon(0.0, delta, confidence, None, None, None)
    for quantile, threshold in zip(quantiles, thresholds, strict=True):
        false_positives = int(np.count_nonzero(non_members > threshold))
        false_negatives = int(np.count_nonzero(members <= threshold))
        fpr = clopper_pearson_upper(false_positives, len(non_members), alpha)
        fnr = clopper_pearson_upper(false_negatives, len(members), alpha)
        for numerator, denominator in ((1.0 - delta - fnr, fpr), (1.0 - delta - fpr, fnr)):
            if numerator > 0 and denominator > 0:
                bound = math.log(numerator / denominator)
                if bound > best.epsilon_lower_bound:
                    best = EmpiricalEpsilon(bound, delta, confidence, float(quantile), fpr, fnr)
    return best
