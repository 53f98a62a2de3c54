from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.data.datasets import raw_dataset
from fedsynth.data.infer import draft_schema, infer_schema, round_outward
from fedsynth.data.schema import ColumnKind
from fedsynth.data.validation import validate_frame


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(30, 104, (20, 110)), (13.04, 44.8, (10, 50)), (0, 47, (0, 50)), (1, 2358, (0, 3000)), (0.01, 20.5, (0, 30))],
)
def test_bounds_are_rounded_strictly_outward(low: float, high: float, expected: tuple[float, float]) -> None:
    lower, upper = round_outward(low, high)
    assert (lower, upper) == expected
    assert lower <= low and upper > high


def test_infer_drafts_a_schema_the_data_passes() -> None:
    frame = raw_dataset("whas500")
    schema = infer_schema(frame, time="lenfol", event="fstat", name="whas")
    assert schema.time_column == "lenfol" and schema.event_column == "fstat"
    assert schema.column("gender").kind == ColumnKind.BINARY
    assert schema.column("age").kind == ColumnKind.INTEGER
    assert schema.column("bmi").kind == ColumnKind.CONTINUOUS
    validate_frame(frame, schema)


def test_infer_refuses_free_text() -> None:
    frame = pd.DataFrame({"note": [f"p{i % 60}" for i in range(100)], "t": range(100), "e": [0, 1] * 50})
    with pytest.raises(ValueError, match="free text or an identifier"):
        infer_schema(frame, time="t", event="e")


def _hospital_extract(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({
        "inst": rng.integers(1, 12, n),                      # an institution code
        "record": [f"r{i:05d}" for i in range(n)],            # named like an identifier
        "key": rng.permutation(n) + 10_000,                  # a row key by its values
        "days": rng.integers(1, 900, n),
        "died": rng.integers(0, 2, n),
        "karnofsky": rng.choice([50, 60, 70, 80, 90, 100], n),
        "calories": np.where(np.arange(n) % 5 == 0, np.nan, rng.integers(100, 2500, n)),
        "weight": np.where(np.arange(n) % 10 == 1, np.nan, rng.normal(70, 10, n).round(1)),
    })  # fmt: skip


def test_the_draft_leaves_identifiers_out_and_says_why() -> None:
    frame = _hospital_extract()
    schema, notes = draft_schema(frame, time="days", event="died")
    assert schema.names == ["days", "died", "karnofsky", "calories", "weight"]
    left_out = {n.column: n.text for n in notes if n.excluded}
    assert set(left_out) == {"inst", "record", "key"}
    assert "its name says it is an identifier (11 distinct values)" in left_out["inst"]
    assert 'partition = "column:inst"' in left_out["inst"]
    assert "every one of its 200 values is different: a row key" in left_out["key"]
    validate_frame(frame, schema)  # the file keeps the columns; validation ignores them


def test_the_draft_reports_missingness_rows_lost_bounds_and_steps() -> None:
    frame = _hospital_extract()
    schema, notes = draft_schema(frame, time="days", event="died")
    text = {(n.column, n.text.split(":")[0].split(",")[0]): n.text for n in notes}
    # Covariates missing in 5% of the rows or more are modelled: their rows are kept.
    assert 'missing = "model" keeps those rows' in text[("calories", "40 of 200 values missing (20%)")]
    assert schema.column("calories").missing == schema.column("weight").missing == "model"
    assert ("weight", "20 of 200 values missing (10%)") in text
    assert not any(n.column == "(all rows)" for n in notes) and len(validate_frame(frame, schema)[0]) == 200
    # Rarer missingness drops the rows, and the note counts them. Rows 0, 5, 10, ... lack calories
    # and rows 1, 11, 21, ... weight: keep 8 and 4 of those, 12 rows, none both.
    rare = frame.copy()
    rare.loc[rare.index[rare["calories"].isna()][8:], "calories"] = 1000
    rare.loc[rare.index[rare["weight"].isna()][4:], "weight"] = 70.5
    schema, notes = draft_schema(rare, time="days", event="died")
    assert schema.column("calories").missing == "drop_row"
    text = {(n.column, n.text.split(":")[0].split(",")[0]): n.text for n in notes}
    assert "drops those rows (under 5% missing" in text[("calories", "8 of 200 values missing (4%)")]
    lost = next(n.text for n in notes if n.column == "(all rows)")
    assert lost.startswith("12 of 200 rows (6%) have a missing value in a drop_row column")
    assert len(validate_frame(rare, schema)[0]) == 188  # what the note said
    karnofsky = schema.column("karnofsky")
    assert (karnofsky.lower, karnofsky.upper, karnofsky.step) == (40.0, 110.0, 10.0)
    assert any(n.column == "karnofsky" and "recorded in steps of 10" in n.text for n in notes)
    assert schema.column("days").step is None and schema.column("weight").step is None  # time; not integral
    assert any(n.column == "(bounds)" and "rounded outward" in n.text for n in notes)


def test_infer_unknown_time_column() -> None:
    frame = pd.DataFrame({"x": [1, 2], "t": [1, 2], "e": [0, 1]})
    with pytest.raises(ValueError, match="--time column 'time' is not in the data"):
        infer_schema(frame, time="time", event="e")


def _survival(**columns: list) -> pd.DataFrame:
    base = {"x": [1.5, 2.5, 3.5, 4.5], "t": [10, 20, 30, 40], "e": [0, 1, 1, 0]}
    return pd.DataFrame(base | columns)


@pytest.mark.parametrize(
    ("frame", "pattern"),
    [
        (_survival(x=[1.5, float("inf"), 3.5, 4.5]), r"column 'x' holds infinite values \(1 row\(s\); first: row 2"),
        (_survival(x=["1.5", "2.5", "-inf", "4.5"]), r"column 'x' holds infinite values .*row 3 = '-inf'"),
        (_survival(e=[0, 1, 2, 0]), r"column 'e' is the event column .*0 \(censored\) and 1 \(event\).*row 3 = '2'"),
        (_survival(e=["no", "yes", "yes", "no"]), r"column 'e' is the event column .*\(4 row\(s\); first: row 1"),
        (_survival(t=[10, -5, 30, 40]), r"column 't' is the time column but holds negative times .*row 2"),
        (_survival(t=["10", "20", "long", "40"]), r"column 't' is the time column but holds text .*row 3 = 'long'"),
    ],
    ids=["inf", "inf-text", "event-2", "event-yes", "negative-time", "text-time"],
)
def test_infer_refuses_what_would_make_a_wrong_draft(frame: pd.DataFrame, pattern: str) -> None:
    with pytest.raises(ValueError, match="^site.csv: " + pattern):
        infer_schema(frame, time="t", event="e", source="site.csv")


def test_infer_refuses_an_empty_file_and_one_column_for_both_roles() -> None:
    with pytest.raises(ValueError, match="^site.csv has no rows"):
        infer_schema(_survival().iloc[:0], time="t", event="e", source="site.csv")
    with pytest.raises(ValueError, match="--time and --event both name 't'"):
        infer_schema(_survival(), time="t", event="t")


def test_infer_counts_missing_tokens_as_missing_like_validation() -> None:
    frame = pd.DataFrame({"x": ["1.5", "NA", "3.5", "nan", "7.25"], "t": [10, 20, 30, 40, 50], "e": [0, 1, 1, 0, 1]})
    schema = infer_schema(frame, time="t", event="e")
    assert schema.column("x").kind == ColumnKind.CONTINUOUS
    assert schema.column("x").missing == "model"  # 2 of 5 missing: modelled, not dropped
    canonical, report = validate_frame(frame, schema)
    assert report.kept_missing == {"x": 2} and canonical["x"].isna().sum() == 2
