"""Fidelity rules on known answers (FLChain over three sites, ``kappa`` missing in a quarter of the
rows and declared missing = "model"), and how outcomes combine.

A near-uniform sample (every column drawn evenly over its public bounds or levels, none missing)
FAILS the default policy's fidelity rules; the sites' own training rows PASS them (the privacy
rules are what stop those: test_signoff.test_a_copy_of_the_training_data_fails); tiny sites cannot
tell and are INCONCLUSIVE whichever sample they judge.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from fedsynth.data.datasets import load_dataset
from fedsynth.data.schema import ColumnKind, Schema
from fedsynth.data.split import train_holdout_split
from fedsynth.evaluation.fidelity import marginal_distances, marginal_histograms
from fedsynth.evaluation.pooled_fidelity import pool_fidelity
from fedsynth.release.policy import load_policy
from fedsynth.release.quality_rules import fidelity_rules
from fedsynth.release.rules import EVALUATION, Document, RuleResult
from fedsynth.release.signoff import Verdict, combine
from tests.missing import blank

MISSING_SHARE = 0.25  # of kappa's values, at random

Sampler = Callable[[pd.DataFrame, Schema, np.random.Generator], pd.DataFrame]


def near_uniform(train: pd.DataFrame, schema: Schema, rng: np.random.Generator) -> pd.DataFrame:
    """As many rows as ``train``, each column drawn evenly over its public bounds or levels."""
    columns = {}
    for column in schema.columns:
        if column.is_numeric:
            values = rng.uniform(float(column.lower), float(column.upper), len(train))
            columns[column.name] = np.round(values) if column.kind is ColumnKind.INTEGER else values
        else:
            labels = list(column.labels)
            columns[column.name] = rng.choice(labels, len(train))
    return pd.DataFrame(columns)


def training_rows(train: pd.DataFrame, schema: Schema, rng: np.random.Generator) -> pd.DataFrame:
    return train.copy()


def site_results(sampler: Sampler, rows_per_site: int | None = None, sites: int = 3) -> list[dict]:
    """Each site's fidelity aggregates as its evaluation reports them (FLChain, IID sites, 20% holdout)."""
    frame, schema = load_dataset("flchain")
    frame, schema = blank(
        frame.sample(frac=1.0, random_state=0).reset_index(drop=True), schema, {"kappa": MISSING_SHARE}
    )
    rng = np.random.default_rng(0)
    results = []
    size = len(frame) // sites
    for i in range(sites):
        part = frame.iloc[i * size : (i + 1) * size]
        part = part.iloc[:rows_per_site] if rows_per_site else part
        train, _ = train_holdout_split(part, 0.2, seed=i)
        synthetic = sampler(train, schema, rng)
        fidelity = {
            "marginals": marginal_distances(train, synthetic, schema),
            "histograms": marginal_histograms(train, synthetic, schema),
        }
        results.append(
            {"site": f"site-{i}", "n_train": len(train), "n_synthetic": len(synthetic), "fidelity": fidelity}
        )
    return results


def judged(sites: list[dict]) -> dict[str, RuleResult]:
    document = Document(EVALUATION, {"worst": {"fidelity": pool_fidelity(sites)}}, None)
    return {rule.name: rule for rule in fidelity_rules(document, load_policy())}


def test_a_near_uniform_sample_fails_every_fidelity_rule() -> None:
    rules = judged(site_results(near_uniform))
    assert {rule.outcome for rule in rules.values()} == {"FAIL"}, rules
    assert rules["fidelity_mean_ks"].value > 0.3
    # mgus: about 1.5% real, half of the uniform rows
    assert "mgus" in rules["fidelity_column_tvd"].reason and rules["fidelity_column_tvd"].value > 0.4
    # kappa: a quarter missing in the real rows, none in the uniform ones
    assert "kappa" in rules["fidelity_missing_share"].reason
    assert rules["fidelity_missing_share"].value == pytest.approx(MISSING_SHARE, abs=0.03)
    for rule in rules.values():
        assert "outside" in rule.reason and "noise floor" in rule.reason


def test_the_training_rows_themselves_pass_every_fidelity_rule() -> None:
    rules = judged(site_results(training_rows))
    assert {rule.outcome for rule in rules.values()} == {"PASS"}, rules
    for rule in rules.values():
        assert rule.value == 0.0 and rule.passed and "noise floor" in rule.reason


def test_tiny_sites_cannot_tell_and_say_what_would_give_power() -> None:
    rules = judged(site_results(training_rows, rows_per_site=40))
    assert {rule.outcome for rule in rules.values()} == {"INCONCLUSIVE"}, rules
    for rule in rules.values():
        assert not rule.passed and "too small to tell" in rule.reason and "x larger" in (rule.power or "")
    # A sample so wrong that no noise at these sizes explains it still FAILS; nothing passes.
    rules = judged(site_results(near_uniform, rows_per_site=40))
    assert rules["fidelity_mean_ks"].outcome == "FAIL"
    assert {rule.outcome for rule in rules.values()} <= {"FAIL", "INCONCLUSIVE"}


def test_a_missing_share_withheld_at_a_site_cannot_be_judged_and_says_so() -> None:
    sites = site_results(training_rows)
    sites[1]["fidelity"]["marginals"]["kappa"]["missing"]["real"] = None  # fewer than 5 missing there
    rule = judged(sites)["fidelity_missing_share"]
    assert rule.outcome == "INCONCLUSIVE" and rule.value is None
    assert "kappa: its real share is withheld at site-1" in rule.reason and "missing and 5 present" in rule.power


def test_without_a_modelled_missing_column_the_missing_share_rule_has_nothing_to_judge() -> None:
    sites = site_results(near_uniform)
    for site in sites:
        del site["fidelity"]["marginals"]["kappa"]["missing"]
    rule = judged(sites)["fidelity_missing_share"]
    assert rule.outcome == "PASS" and rule.reason == 'no column has missing = "model"' and rule.value is None


def test_a_site_without_fidelity_fails_the_rules_naming_it() -> None:
    sites = site_results(training_rows, rows_per_site=100)
    del sites[2]["fidelity"]
    for rule in judged(sites).values():
        assert rule.outcome == "FAIL" and "site-2 reported no per-column fidelity" in rule.reason
    document = Document(EVALUATION, {"worst": {"sites_not_scored": []}}, None)
    for rule in fidelity_rules(document, load_policy()):
        assert rule.outcome == "FAIL" and "no worst.fidelity" in rule.reason


def _rule(outcome: str) -> RuleResult:
    return RuleResult(name=outcome.lower(), value=None, threshold="-", outcome=outcome, reason="-")


@pytest.mark.parametrize(
    ("outcomes", "verdict"),
    [
        (["PASS", "PASS"], "PASS"),
        (["PASS", "INCONCLUSIVE"], "INCONCLUSIVE"),
        (["INCONCLUSIVE", "FAIL", "PASS"], "FAIL"),
        (["FAIL"], "FAIL"),
    ],
)
def test_the_verdict_is_fail_then_inconclusive_then_pass(outcomes: list[str], verdict: str) -> None:
    assert combine([_rule(o) for o in outcomes]) == verdict


def test_passed_and_outcome_always_agree() -> None:
    assert _rule("INCONCLUSIVE").passed is False and _rule("PASS").passed is True
    with pytest.raises(ValueError, match="contradicts outcome"):
        RuleResult(name="x", value=None, threshold="-", passed=True, outcome="INCONCLUSIVE", reason="-")
    # Records written before INCONCLUSIVE existed carry `passed` alone.
    old = RuleResult.model_validate({"name": "x", "value": 1, "threshold": "-", "passed": False, "reason": "-"})
    assert old.outcome == "FAIL"
    verdict = Verdict.model_validate({"run_id": "r", "policy": "p", "passed": True, "rules": [], "time": "t"})
    assert verdict.outcome == "PASS"
    changed = _rule("PASS").with_outcome("INCONCLUSIVE", "too few rows", power="more rows")
    assert (changed.outcome, changed.passed, changed.power) == ("INCONCLUSIVE", False, "more rows")
