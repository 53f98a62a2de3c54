"""A site's subgroup fairness figures: the research figures themselves where every level is large,
small real counts and event rates withheld (with the secondary suppression that keeps a withheld
count from being the total less the others), and the sensitive columns a site reports on."""

from __future__ import annotations

import pytest

from fedsynth.evaluation.fairness import FIGURES, subgroup_fairness
from fedsynth.evaluation.site_fairness import (
    FEW_EVENTS,
    check_sensitive_column,
    sensitive_columns,
    site_fairness,
    withhold_small_counts,
)
from tests.evaluation.test_fairness import SCHEMA, built


def test_large_levels_carry_the_research_figures_and_their_counts() -> None:
    train, holdout, synthetic = built(600, 3), built(600, 4), built(600, 5)
    entry = site_fairness(train, holdout, synthetic, SCHEMA, ["group"], horizon=1.0)["group"]
    report = subgroup_fairness(train, holdout, synthetic, SCHEMA, "group", horizon=1.0)
    assert entry["horizon"] == 1.0 and entry["overall"] == pytest.approx(report.overall)
    for level in ("a", "b"):
        figures = entry["levels"][level]
        assert figures == pytest.approx({k: v for k, v in report.levels[level].items() if not k.startswith("share")})
        assert set(figures) == {"n_train", "n_holdout", "n_synthetic", *FIGURES}
    assert entry["gaps"] == pytest.approx(report.gaps) and entry["not_estimable"] == {}


def test_a_level_under_the_cell_minimum_has_no_count_and_neither_has_the_other_level() -> None:
    train, holdout, synthetic = built(400, 6, b_rows=3), built(400, 7, b_rows=3), built(400, 8, b_rows=3)
    entry = site_fairness(train, holdout, synthetic, SCHEMA, ["group"], horizon=1.0)["group"]
    a, b = entry["levels"]["a"], entry["levels"]["b"]
    # 3 rows of b: withheld; 397 of a withheld too, or n_train - 397 would be b's 3.
    assert (a["n_train"], a["n_holdout"], b["n_train"], b["n_holdout"]) == (None, None, None, None)
    assert (a["n_synthetic"], b["n_synthetic"]) == (397, 3)  # model output: not a patient count
    assert set(FIGURES) <= set(a)  # a's figures stand: it has the rows for them
    assert not set(FIGURES) & set(b) and set(entry["not_estimable"]["b"]) == set(FIGURES)
    assert entry["not_estimable"]["b"]["cindex_tstr"] == "fewer than 20 holdout rows"  # a phrase, not a count


def test_a_real_event_rate_of_a_few_events_is_withheld() -> None:
    train = built(400, 9, b_rows=40)
    b_events = train.index[(train["group"] == "b") & (train["event"] == 1)]
    train.loc[b_events[3:], "event"] = 0  # 3 of b's 40 training rows with an event
    entry = site_fairness(train, built(400, 10), built(400, 11), SCHEMA, ["group"], horizon=1.0)["group"]
    b = entry["levels"]["b"]
    assert "event_rate_real" not in b and entry["not_estimable"]["b"] == {"event_rate_real": FEW_EVENTS}
    assert b["n_train"] == 40 and "event_rate_synthetic" in b and "cindex_tstr" in b
    assert entry["gaps"]["event_rate_real"] is None  # one level left with the figure


@pytest.mark.parametrize(
    ("counts", "withheld"),
    [
        ({"a": 100, "b": 50, "c": 3}, {"b", "c"}),  # the smallest other one goes with it
        ({"a": 100, "b": 4, "c": 3}, {"b", "c"}),  # two small ones protect each other
        ({"a": 100, "b": 50}, set()),
        ({"a": 0, "b": 50}, {"a", "b"}),  # an empty level is a small cell too
    ],
)
def test_secondary_suppression(counts: dict[str, int], withheld: set[str]) -> None:
    levels = {level: {"n_train": n, "n_holdout": 30} for level, n in counts.items()}
    withhold_small_counts(levels)
    assert {level for level, entry in levels.items() if entry["n_train"] is None} == withheld
    assert all(entry["n_holdout"] == 30 for entry in levels.values())


def test_the_sensitive_columns_are_discrete_features_the_models_first() -> None:
    assert sensitive_columns("group", ["x", "group"]) == ["group", "x"]
    assert sensitive_columns(None, None) == []
    check_sensitive_column(SCHEMA, "group")
    for column, named in (("x", "'x' is continuous"), ("event", "not a feature"), ("nope", "not a feature")):
        with pytest.raises(ValueError, match=named):
            check_sensitive_column(SCHEMA, column)
    with pytest.raises(ValueError, match="is continuous"):
        site_fairness(built(100, 1), built(100, 2), built(100, 3), SCHEMA, ["x"], horizon=1.0)
