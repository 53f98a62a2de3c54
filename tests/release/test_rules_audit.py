"""The exact-match rule: a synthetic row equal to a patient counts against chance, not against zero."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from fedsynth.release.policy import default_policy_path, load_policy
from fedsynth.release.rules import Document
from fedsynth.release.rules_audit import clopper_pearson_upper, exact_match_rule


def _audit(exact: int, n_synthetic: int, holdout: int | None, n_holdout: int) -> Document:
    worst = {"exact_matches": exact, "exact_matches_holdout": holdout,
             "exact_matches_n_holdout": n_holdout, "exact_matches_n_synthetic": n_synthetic}  # fmt: skip
    return Document("audit.json", {"worst": worst, "sites": []}, None)


def test_the_upper_limit_is_the_exact_binomial_one() -> None:
    for count, trials in [(0, 581), (3, 581), (40, 200)]:
        expected = binomtest(count, trials).proportion_ci(0.95, method="exact").high
        assert clopper_pearson_upper(count, trials) == pytest.approx(expected, rel=1e-9)
    assert clopper_pearson_upper(0, 0) == 1.0 and clopper_pearson_upper(5, 5) == 1.0


def test_a_chance_match_passes_and_copies_fail() -> None:
    policy = load_policy()  # the default policy: exact_matches_baseline = "holdout"
    chance = exact_match_rule(_audit(1, 2400, 0, 581), policy)  # one of 2,400 on coarse columns
    assert chance.passed and chance.value == pytest.approx(1 / 2400)
    assert "upper 95% 0.633%" in chance.reason and "no more often than chance" in chance.reason
    copies = exact_match_rule(_audit(2400, 2400, 0, 581), policy)  # a copy of the training rows
    assert not copies.passed and copies.outcome == "FAIL" and "copies, not chance" in copies.reason
    too_many = exact_match_rule(_audit(30, 2400, 0, 581), policy)  # 1.25% against an upper 0.63%
    assert not too_many.passed
    # Coarse data where unseen patients match a training row 40 times in 200: so may synthetic rows.
    coarse = exact_match_rule(_audit(500, 2400, 40, 200), policy)
    assert coarse.passed and coarse.value == pytest.approx(500 / 2400)


def test_without_a_baseline_the_count_is_tested(tmp_path) -> None:
    policy = load_policy()
    older = exact_match_rule(_audit(1, 2400, None, 0), policy)  # an audit.json before the baseline
    assert not older.passed and older.value == 1 and "audit.json has no holdout baseline" in older.reason
    path = tmp_path / "policy.toml"
    path.write_text(default_policy_path().read_text().replace('exact_matches_baseline = "holdout"',
                                                              'exact_matches_baseline = "none"'))  # fmt: skip
    strict = load_policy(path)
    rule = exact_match_rule(_audit(1, 2400, 0, 581), strict)
    assert not rule.passed and rule.value == 1 and "1 outside <= 0" in rule.reason
