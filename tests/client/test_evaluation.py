"""The aggregate-only contract of an evaluation reply's subgroup fairness part, field by field: the
figures a site computes pass it; row-level data, unknown names, small real counts and figures of
too few rows do not."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from fedsynth.client.evaluation import check_evaluation_result, check_fairness_result
from fedsynth.data.split import train_holdout_split
from fedsynth.evaluation.site_evaluation import evaluate_synthetic


@pytest.fixture(scope="module")
def evaluated(whas500) -> dict[str, Any]:
    """A WHAS500 site's evaluation of a synthetic sample (its holdout's complement), with fairness
    figures across gender and cvd."""
    frame, schema = whas500
    train, holdout = train_holdout_split(frame, 0.5, 0)
    synthetic = train.sample(frac=1.0, replace=True, random_state=0)
    result = evaluate_synthetic(train, holdout, synthetic, schema, [365.0], fairness_columns=["gender", "cvd"])
    return {"site": "site-0", **result}


def test_the_figures_a_site_computes_pass_and_are_pooled(evaluated, whas500) -> None:
    from fedsynth.server.evaluation import worst_over_sites

    check_evaluation_result(evaluated, whas500[1])
    fairness = evaluated["fairness"]
    assert list(fairness) == ["gender", "cvd"] and fairness["gender"]["horizon"] == 365.0
    assert set(fairness["gender"]["levels"]) == {"0", "1"}
    pooled = worst_over_sites([evaluated])["fairness"]
    assert pooled["gender"]["levels"]["1"]["cindex_tstr"] == fairness["gender"]["levels"]["1"]["cindex_tstr"]


def _set(*path: str, value: Any) -> Callable[[dict], None]:
    def change(fairness: dict) -> None:
        target = fairness
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _drop(*path: str) -> Callable[[dict], None]:
    def change(fairness: dict) -> None:
        target = fairness
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        # 20 numbers: a histogram's length, which the generic check lets through; this part has no list.
        (_set("gender", "levels", "1", "ages", value=[71.0] * 20), "counts .* and figures .* only"),
        (_set("gender", "levels", "1", "times", value=list(range(250))), "not an aggregate"),  # the generic check
        (_set("gender", "levels", "patient-17", value={"n_train": 30}), "declared levels"),
        (_set("gender", "levels", "1", "n_train", value=3), "a count under 5 real rows is withheld"),
        (_set("gender", "levels", "1", "n_holdout", value=None), "withheld alone; the totals would give it back"),
        (_set("gender", "levels", "1", "n_holdout", value=12), "a figure of fewer than 20 real rows"),
        (_set("gender", "levels", "1", "event_rate_real", value=3 / 200), "fewer than 5 rows with or without"),
        (_set("gender", "levels", "1", "cindex_tstr", value=71.0), "outside \\[0, 1\\]"),
        (_set("gender", "levels", "1", "cindex_tstr", value="71"), "not a number"),
        (_set("gender", "gaps", "age", value=0.1), "gaps: holds"),
        (_set("gender", "overall", "cindex_tstr", value=-0.5), "outside"),
        (_set("gender", "gaps", "calibration_tstr", value=-0.1), "outside \\[0, 2\\]"),  # a gap is max - min
        (_set("gender", "gaps", "cindex_tstr", value=1.5), "outside \\[0, 1\\]"),
        (_set("gender", "not_estimable", "1", value={"cindex_tstr": 12}), "a reason \\(text\\) per figure"),
        (_set("gender", "rows", value="row 17: age 71"), "holds .* \\(or an error\\) only"),
        (_drop("gender", "gaps"), "holds .* \\(or an error\\) only"),
        (_set("age", value={"error": "no"}), "'age' is integer"),
        (_set("lenfol", value={"error": "no"}), "not a feature"),
    ],
)
def test_a_fairness_part_outside_the_contract_is_refused(evaluated, whas500, change, refused) -> None:
    result = copy.deepcopy(evaluated)
    result["fairness"]["gender"]["levels"]["1"]["n_train"] = 200  # 200 rows: one event rate above is 3 events
    change(result["fairness"])
    with pytest.raises(ValueError, match=refused):
        check_evaluation_result(result, whas500[1])


def test_a_column_that_failed_is_its_reason_only(whas500) -> None:
    check_fairness_result({"gender": {"error": "ValueError: no comparable pairs"}}, whas500[1])
    with pytest.raises(ValueError, match="not a mapping"):
        check_fairness_result([], whas500[1])
