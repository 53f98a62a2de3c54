"""The audits in anonymeter's evaluator shape, on cases whose answer is known: a copy of the
training rows must read as a leak, fresh rows from the same population must not."""

from __future__ import annotations

import pytest

from fedsynth.data.datasets import load_dataset
from fedsynth.model.config import MCMConfig
from fedsynth.model.mcm import MCM
from fedsynth.privacy.anonymeter_audit import AnonymeterSettings
from fedsynth.privacy.evaluators import (
    AnonymeterEvaluator,
    MembershipEvaluator,
    NearestNeighbourEvaluator,
    WhiteBoxMembershipEvaluator,
)


@pytest.fixture(scope="module")
def flchain_thirds():
    frame, schema = load_dataset("flchain")
    shuffled = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    n = 600
    return shuffled[:n], shuffled[n : 2 * n], shuffled[2 * n : 3 * n], schema


def evaluators(ori, syn, control, schema):
    return [
        NearestNeighbourEvaluator(ori, syn, control, schema),
        MembershipEvaluator(ori, syn, control, schema, "distance", delta=1e-4),
        MembershipEvaluator(ori, syn, control, schema, "density", delta=1e-4),
    ]


def test_a_copy_of_the_training_rows_reads_as_a_leak_on_every_evaluator(flchain_thirds) -> None:
    train, holdout, _, schema = flchain_thirds
    for evaluator in evaluators(train, train.copy(), holdout, schema):
        assert evaluator.evaluate() is evaluator  # anonymeter's shape: evaluate() returns self
        risk = evaluator.risk()
        # Far above chance (0.5): distances read ~1; the density attack's smoothing keeps it nearer 0.8.
        assert risk.ci[0] > 0.75 and risk.ci[0] <= risk.value <= risk.ci[1], (evaluator.name, risk)


def test_fresh_rows_from_the_same_population_read_as_chance(flchain_thirds) -> None:
    train, holdout, fresh, schema = flchain_thirds
    for evaluator in evaluators(train, fresh, holdout, schema):
        risk = evaluator.evaluate().risk()
        assert risk.ci[0] <= 0.5 <= risk.ci[1], (evaluator.name, risk)
        assert evaluator.results() == evaluator.result.to_dict()  # the aggregates the site sends


def test_the_white_box_evaluator_reads_the_model_and_an_untrained_one_knows_no_member(flchain_thirds) -> None:
    train, holdout, _, schema = flchain_thirds
    model = MCM(MCMConfig(hidden=8, n_bins=8)).build(schema)  # has seen no row at all
    evaluator = WhiteBoxMembershipEvaluator(train, model, holdout, schema, seed=3).evaluate()
    assert evaluator.syn is None and evaluator.name == "white-box"
    assert evaluator.risk().ci[0] <= 0.5 <= evaluator.risk().ci[1]


def test_the_anonymeter_evaluator_reports_its_worst_attack_and_a_copy_is_worse_than_fresh_rows(flchain_thirds) -> None:
    train, holdout, fresh, schema = flchain_thirds
    settings = AnonymeterSettings(n_attacks=150)
    copied = AnonymeterEvaluator(train, train.copy(), holdout, schema, settings).evaluate()
    unseen = AnonymeterEvaluator(train, fresh, holdout, schema, settings).evaluate()
    for evaluator in (copied, unseen):
        worst = max(evaluator.results(), key=lambda r: r["ci"][1])
        assert evaluator.risk().value == worst["risk"] and evaluator.risk().ci == tuple(worst["ci"])
    assert copied.risk().ci[1] > unseen.risk().ci[1]


def test_an_evaluator_refuses_to_answer_before_it_ran_and_names_unknown_attacks(flchain_thirds) -> None:
    train, holdout, fresh, schema = flchain_thirds
    with pytest.raises(RuntimeError, match="call evaluate\\(\\) first"):
        NearestNeighbourEvaluator(train, fresh, holdout, schema).risk()
    with pytest.raises(ValueError, match="unknown membership attack 'shadow'; choose one of distance, density"):
        MembershipEvaluator(train, fresh, holdout, schema, "shadow")
