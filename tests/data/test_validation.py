"""Validation reports every problem at once, naming column, rows, values and the fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.data.datasets import bundled_schema, raw_dataset
from fedsynth.data.schema import Schema
from fedsynth.data.validation import DataValidationError, validate_frame


@pytest.fixture()
def raw() -> pd.DataFrame:
    return raw_dataset("gbsg2").astype(object)


@pytest.fixture()
def schema() -> Schema:
    return bundled_schema("gbsg2")


def test_clean_data_becomes_canonical(raw: pd.DataFrame, schema: Schema) -> None:
    frame, report = validate_frame(raw, schema)
    assert list(frame.columns) == schema.names
    assert frame["age"].dtype == np.int64
    assert set(frame["horTh"]) == {"no", "yes"}
    assert set(frame["cens"]) == {0, 1}
    assert report.dropped_rows == {} and report.ignored_columns == []


def test_every_problem_is_reported_at_once(raw: pd.DataFrame, schema: Schema) -> None:
    raw = raw.drop(columns=["pnodes"])
    raw.loc[3, "age"] = "sixty"
    raw.loc[5, "tsize"] = 999
    raw.loc[7, "tgrade"] = "IV"
    raw.loc[9, "cens"] = 2
    raw.loc[11, "time"] = None
    with pytest.raises(DataValidationError) as caught:
        validate_frame(raw, schema, source="site.csv")
    problems = {p.column: p for p in caught.value.problems}
    assert set(problems) == {"pnodes", "age", "tsize", "tgrade", "cens", "time"}
    assert "missing from the data" in problems["pnodes"].message
    assert problems["age"].rows == (4,) and problems["age"].values == ("sixty",)
    assert "not numbers" in problems["age"].message
    assert "bounds" in problems["tsize"].message and problems["tsize"].values == ("999",)
    assert "unknown categories" in problems["tgrade"].message and "IV" in str(caught.value)
    assert "not binary" in problems["cens"].message
    assert "missing values" in problems["time"].message
    message = str(caught.value)
    assert message.startswith("site.csv does not match the schema (6 problem(s))")
    assert message.count("fix:") == 6


def test_non_integer_in_integer_column(raw: pd.DataFrame, schema: Schema) -> None:
    raw.loc[0, "age"] = 50.5
    with pytest.raises(DataValidationError, match="not whole numbers"):
        validate_frame(raw, schema)


def test_near_miss_column_name_suggests_rename(raw: pd.DataFrame, schema: Schema) -> None:
    raw = raw.rename(columns={"age": "Age"})
    with pytest.raises(DataValidationError, match="found 'Age': rename it to 'age'"):
        validate_frame(raw, schema)


def test_missing_policies_drop_and_fill(raw: pd.DataFrame, schema: Schema) -> None:
    data = schema.to_dict()
    for column in data["columns"]:
        if column["name"] == "tsize":
            column["missing"] = "drop_row"
        if column["name"] == "age":
            column.update(missing="fill", fill_value=50)
    relaxed = Schema.from_dict(data)
    raw.loc[[1, 2], "tsize"] = None
    raw.loc[4, "age"] = ""
    frame, report = validate_frame(raw, relaxed)
    assert len(frame) == len(raw) - 2
    assert report.dropped_rows == {"tsize": 2}
    assert report.filled_values == {"age": 1}
    assert 50 in frame["age"].tolist()


def test_extra_columns_are_ignored_and_reported(raw: pd.DataFrame, schema: Schema) -> None:
    raw["patient_id"] = range(len(raw))
    frame, report = validate_frame(raw, schema)
    assert "patient_id" not in frame.columns
    assert report.ignored_columns == ["patient_id"]


def test_many_bad_rows_show_first_few_and_count(raw: pd.DataFrame, schema: Schema) -> None:
    raw.loc[0:19, "age"] = 200
    with pytest.raises(DataValidationError) as caught:
        validate_frame(raw, schema)
    (problem,) = caught.value.problems
    assert problem.count == 20 and len(problem.rows) == 5
    assert "(+15 more)" in str(problem)


def test_binary_accepts_booleans_and_text(schema: Schema, raw: pd.DataFrame) -> None:
    raw["cens"] = raw["cens"].map({0: "false", 1: "TRUE"})
    frame, _ = validate_frame(raw, schema)
    assert set(frame["cens"]) == {0, 1}


def test_empty_frame_is_an_error(schema: Schema, raw: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError, match="no rows"):
        validate_frame(raw.iloc[:0], schema)


def test_zero_row_parquet_is_a_clear_error(schema: Schema, tmp_path) -> None:
    # Read back from Parquet, the empty columns keep their dtypes (float, object): no traceback.
    path = tmp_path / "empty.parquet"
    raw_dataset("gbsg2").iloc[:0].to_parquet(path)
    with pytest.raises(DataValidationError, match="(?s)empty.parquet does not match.*the data has no rows"):
        validate_frame(pd.read_parquet(path), schema, source=str(path))


def test_binary_column_with_every_cell_empty_names_the_column(schema: Schema, raw: pd.DataFrame) -> None:
    raw["cens"] = np.nan  # an unlabelled binary column (0/1), as read from a CSV with the column blank
    with pytest.raises(DataValidationError, match=r"column 'cens': missing values.*\[686 row\(s\)"):
        validate_frame(raw, schema)


def test_infinite_numbers_are_named_as_such(schema: Schema, raw: pd.DataFrame) -> None:
    raw.loc[2, "age"] = "inf"
    raw.loc[3, "time"] = float("-inf")
    with pytest.raises(DataValidationError) as caught:
        validate_frame(raw, schema)
    problems = {p.column: p for p in caught.value.problems}
    assert set(problems) == {"age", "time"}
    assert all(p.message == "values are infinite, not numbers" for p in problems.values())
    assert problems["age"].rows == (3,) and problems["time"].rows == (4,)


def test_missing_model_keeps_missing_cells_as_nan_in_every_kind(raw: pd.DataFrame, schema: Schema) -> None:
    from tests.missing import modelled_schema

    modelled = modelled_schema(schema, ["age", "horTh", "tgrade"])
    raw.loc[[2, 4], "age"] = ""
    raw.loc[[4], "horTh"] = "NA"
    raw.loc[[6, 7, 8], "tgrade"] = None
    frame, report = validate_frame(raw, modelled)
    assert len(frame) == len(raw)  # nothing dropped
    assert report.kept_missing == {"age": 2, "horTh": 1, "tgrade": 3}
    assert frame["age"].dtype == np.float64 and frame["age"].isna().sum() == 2
    assert frame.loc[0, "age"] == float(raw.loc[0, "age"])
    assert frame["horTh"].isna().sum() == 1 and set(frame["horTh"].dropna()) == {"no", "yes"}
    assert list(frame.index[frame["tgrade"].isna()]) == [6, 7, 8]
    with pytest.raises(DataValidationError, match="'model'"):
        validate_frame(raw, schema)  # the reject policy's fix names the new policy
