from __future__ import annotations

import pytest

from fedsynth.data.conditions import Condition, ConditionError, parse_condition, parse_conditions, resolve_conditions
from fedsynth.data.datasets import bundled_schema


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("diabetes=1", Condition("diabetes", values=("1",))),
        ("sex == F", Condition("sex", values=("F",))),
        ("stage in {2,3}", Condition("stage", values=("2", "3"))),
        ("tgrade in [I, 'II']", Condition("tgrade", values=("I", "II"))),
        ("60<=age<=80", Condition("age", lower=60, upper=80)),
        ("60 < age < 80", Condition("age", lower=60, upper=80, lower_strict=True, upper_strict=True)),
        ("age>=60", Condition("age", lower=60)),
        ("age<80", Condition("age", upper=80, upper_strict=True)),
        ("70 <= age", Condition("age", lower=70)),
        ("flc.grp in {1,2}", Condition("flc.grp", values=("1", "2"))),
    ],
)
def test_grammar(text: str, expected: Condition) -> None:
    assert parse_condition(text) == expected


def test_several_conditions_in_one_expression() -> None:
    parsed = parse_conditions(["chf=1; 60<=age<=80", "gender=0 and sho=1"])
    assert [c.column for c in parsed] == ["chf", "age", "gender", "sho"]


@pytest.mark.parametrize("text", ["", "age", "age >> 3", "60 <= age <= eighty"])
def test_unparseable(text: str) -> None:
    with pytest.raises(ConditionError):
        parse_condition(text)


@pytest.fixture(scope="module")
def whas():
    return bundled_schema("whas500")


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("agee>=60", r"unknown column 'agee'.*Did you mean 'age'"),
        ("age>=500", r"outside the schema's bounds for 'age' \[20, 110\]"),
        ("age=7", r"outside the schema's bounds"),
        ("80<=age<=60", "selects no value"),
        ("chf=2", r"'2' is not a declared value; allowed: 0, 1"),
        ("chf>=1", "range does not apply"),
        ("age in {60,70}", "set of values applies to discrete"),
        ("age=60.5", "integer"),
    ],
)
def test_resolution_errors_name_column_and_fix(whas, text: str, pattern: str) -> None:
    with pytest.raises(ConditionError, match=pattern):
        resolve_conditions(parse_conditions([text]), whas)


def test_conditions_on_same_column_intersect(whas) -> None:
    (resolved,) = resolve_conditions(parse_conditions(["age>=60", "age<=80", "50<=age<=70"]), whas)
    assert (resolved.lower_value, resolved.upper_value) == (60, 70)
    with pytest.raises(ConditionError, match="contradict"):
        resolve_conditions(parse_conditions(["age>=60", "age<=50"]), whas)


def test_strict_integer_bounds_become_inclusive(whas) -> None:
    (resolved,) = resolve_conditions(parse_conditions(["60<age<80"]), whas)
    assert (resolved.lower_value, resolved.upper_value) == (61, 79)


def test_labelled_categories() -> None:
    gbsg = bundled_schema("gbsg2")
    (resolved,) = resolve_conditions(parse_conditions(["tgrade in {II,III}"]), gbsg)
    assert resolved.codes == (1, 2)
    with pytest.raises(ConditionError, match="allowed: I, II, III"):
        resolve_conditions(parse_conditions(["tgrade=IV"]), gbsg)
